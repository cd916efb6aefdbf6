"""The web portal: its page and files (`static`), and the routes only the portal needs
(`scenarios`: the trainee's panel), served on the Azure-compatible API's HTTPS origin."""
