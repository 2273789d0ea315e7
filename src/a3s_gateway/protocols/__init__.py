"""Protocol code: sans-IO adapters and header rules shared by HTTP/1.1 and HTTP/2 (Ring 0)."""
