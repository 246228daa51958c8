"""Rein's Telegram surface: the application factory, handlers and rendering."""
