"""Plans into doit tasks: one task per step and resource, its up-to-date check, the run state doit keeps."""

