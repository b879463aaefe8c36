"""Everything that touches torch and diffusers: request types, pipeline, queue, worker."""
