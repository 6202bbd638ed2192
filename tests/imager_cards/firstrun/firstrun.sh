#!/bin/sh

set +e

CURRENT_HOSTNAME=$(cat /etc/hostname | tr -d " \t\n\r")
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname entrance
else
   echo entrance >/etc/hostname
   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\tentrance/g" /etc/hosts
fi
FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)
FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4m0Hx8ZJ2bL7y8cV0mXkQ2m0c8dS0a5p6hYw9F1tq2 admin@workstation'
else
   install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"
   cat > "$FIRSTUSERHOME/.ssh/authorized_keys" <<'EOF2'
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4m0Hx8ZJ2bL7y8cV0mXkQ2m0c8dS0a5p6hYw9F1tq2 admin@workstation
EOF2
   chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"
   chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"
   echo 'PasswordAuthentication no' >>/etc/ssh/sshd_config
   systemctl enable ssh
fi
if [ -f /usr/lib/userconf-pi/userconf ]; then
   /usr/lib/userconf-pi/userconf 'pi' '$5$Yb0TlxFhBq$0bRlqvJ2LsJ3N6C0kT6QhDyz1WnQf7gX9lq4m0p9tC3'
else
   echo "$FIRSTUSER:"'$5$Yb0TlxFhBq$0bRlqvJ2LsJ3N6C0kT6QhDyz1WnQf7gX9lq4m0p9tC3' | chpasswd -e
fi
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan 'EntranceNet' '7d4b8a3f0c9e2b1a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e' 'GB'
fi
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_keymap 'gb'
   /usr/lib/raspberrypi-sys-mods/imager_custom set_timezone 'Europe/London'
fi
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
