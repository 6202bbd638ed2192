"""``maskwatch provision BOOT_DIR``: turn a freshly flashed Raspberry Pi OS card into an entrance
camera that installs itself on first boot, without internet on the Pi.

One module per question: :mod:`card` (which card is this: cloud-init or firstrun.sh, which OS
release and Python), :mod:`cloudinit` and :mod:`firstrun` (hooking the first-boot install into
the mechanism the card uses), :mod:`wheelhouse` (the aarch64 wheels, pinned and cached),
:mod:`config_file` (the daemon's config.toml and its secrets), :mod:`plan` (every file the card
gets, compared with what is there: ``--dry-run`` prints it, a second run finds nothing to do) and
:mod:`command` (the command line).
"""
