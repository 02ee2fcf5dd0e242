"""Run the relay: `python app.py` is `callrelay serve` (HOST and PORT override 0.0.0.0:6000)."""

from callrelay.cli import serve_main

if __name__ == "__main__":
    serve_main()
