lego --server https://acme.example.com/rest/acme/directory --eab --kid ctk_EXAMPLE --hmac EAB_HMAC_KEY --email ops@example.com --accept-tos --http --domains www.example.com run
