acme.sh --register-account --server https://acme.example.com/rest/acme/directory --eab-kid ctk_EXAMPLE --eab-hmac-key EAB_HMAC_KEY
acme.sh --issue --server https://acme.example.com/rest/acme/directory --standalone -d www.example.com
