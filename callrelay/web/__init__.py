"""Thin adapters: Flask routes, the Twilio `/stream` WebSocket and Socket.IO."""
