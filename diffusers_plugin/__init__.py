"""photoimmune.diffusers_plugin: `pipe.enable_immunization_check()` for diffusers pipelines.

Not built yet: the plugin lands with its own issue (see docs/architecture.md)."""
