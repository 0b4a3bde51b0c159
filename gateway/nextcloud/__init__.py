"""The door for the Nextcloud apps (desktop, nextcloudcmd, Android, iOS): docs/NEXTCLOUD-APPS.md."""
