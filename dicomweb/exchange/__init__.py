"""Exchange: grants to other institutions and share links, with their REST and page faces."""
