"""The ``bastion`` command line: a thin layer over :class:`bastion.Workspace`."""
