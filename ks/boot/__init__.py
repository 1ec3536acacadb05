"""The boot side: what a machine meets — the boot path, its scripts and templates, image files,
PXELINUX links, first-boot seeds, and the views that answer machines (iPXE, Pixiecore)."""
