"""The steps, one module each (build, mods, download, copies, check, launch): each answers Noop or the commands it runs."""

