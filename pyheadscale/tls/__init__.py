"""TLS on the main listener: certificates from files (`tls_cert_path`/`tls_key_path`) or from ACME."""
