"""Keel's virtual machine monitor: boots the Keel kernel on Linux KVM."""

__version__ = "0.1.0"
