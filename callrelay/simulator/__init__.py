"""A stand-in for Twilio: its REST API, its webhooks and its Media Streams client.

Used by the tests, the benchmarks and the demo, since Twilio itself cannot be reached from a
development machine or CI. It sends Twilio's exact messages and signs every request.
"""
