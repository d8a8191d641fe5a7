# Not secret: the API token is read from TF_VAR_proxmox_api_token, never from this file.

proxmox_endpoint = "https://pve.example:8006"
