wacs.exe --baseuri https://acme.example.com/rest/acme/directory --eab-key-identifier ctk_EXAMPLE --eab-key EAB_HMAC_KEY --source manual --host www.example.com
