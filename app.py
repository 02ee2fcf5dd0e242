"""Run the relay: `python app.py` (HOST and PORT override 0.0.0.0:6000)."""

from callrelay.server import main

if __name__ == "__main__":
    main()
