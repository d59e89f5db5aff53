"""Facts about nodes, asked once per run and kept until a change: Docker, memory, the HuggingFace cache."""

