"""KIWIspray: network-boot provisioning for KIWI images."""

__version__ = "0.1.0"
