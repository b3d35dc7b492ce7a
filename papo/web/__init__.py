"""The browser chat client and the dashboard, served as static files by papo."""
