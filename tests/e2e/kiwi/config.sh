#!/bin/bash
# Runs inside the image root after the packages are installed.
set -euxo pipefail

# The installed system's network: DHCP on the first NIC (net.ifnames=0: eth0).
systemctl enable systemd-networkd.service
systemctl enable kstest-marker.service

# Smaller disk, faster install: this machine needs no documentation, no
# translations and only the drivers of a QEMU machine.
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /var/cache/apt/*
for kernel in /lib/modules/*; do
    rm -rf "$kernel"/kernel/drivers/{gpu,media,infiniband,staging,net/wireless,net/ethernet/mellanox,scsi/qla2xxx,scsi/lpfc,bluetooth,iio,hid,input/touchscreen,isdn,usb/gadget}
    rm -rf "$kernel"/kernel/{sound,net/bluetooth,net/mac80211,net/wireless}
    depmod -a "$(basename "$kernel")"
done
