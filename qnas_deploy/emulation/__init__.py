"""Other machines' CPUs on this one: the aarch64 builds of the runtimes under qemu (``aarch64``)."""
