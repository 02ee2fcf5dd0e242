"""Benchmark: storing a 10-minute call in S3-compatible storage (`RECORDINGS_URL`).

    callrelay bench store-upload [--minutes 10]
    (or python -m benchmarks.store_upload)

The shipped two-party call repeated to `--minutes`, written as the recorder writes it, kept as
each `RECORDINGS_FORMAT`, then stored by the relay's own uploader (multipart above 16 MiB,
each file's size checked) in moto's S3-compatible server on loopback. Prints the bytes stored,
the wall time, and the CPU the relay's side spent (boto3, in this process) beside the
server's. moto keeps objects in memory in Python: a real store (MinIO, S3) answers faster, so
read the wall time as an upper bound. Loopback only. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.meter import ProcessMeter
from benchmarks.recording_formats import telephone_pcm, write_call
from callrelay.recording_formats import CODECS, RecordingFormat, encode_call
from callrelay.simulator.audio_source import default_call_audio
from callrelay.simulator.media_client import new_sid
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.object_store import ObjectStore
from callrelay.uploads import CallUploader
from tests.s3_server import S3Server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    tracks = [telephone_pcm(path, seconds) for path in default_call_audio()]
    server = S3Server().start()
    try:
        bucket = server.new_bucket()
        os.environ.update(server.env(bucket))
        store = ObjectStore(f"s3://{bucket}/calls")
        assert server.process is not None
        moto = ProcessMeter(server.process.pid)
        print(f"storing a {args.minutes:g}-minute two-sided call in moto's S3 server on loopback")
        with tempfile.TemporaryDirectory() as scratch:
            files = LocalCallFiles(Path(scratch))
            uploader = CallUploader(files, store, keep_local=False)
            for kept_as in RecordingFormat:
                call_sid = new_sid("CA")
                write_call(files.folder(call_sid), tracks)
                if kept_as is not RecordingFormat.WAV:
                    encode_call(files.folder(call_sid), CODECS[kept_as])
                size = sum(file.size for file in files.files(call_sid))
                wall, cpu, server_cpu = time.monotonic(), time.process_time(), moto.cpu_seconds()
                uploader.store_files(call_sid)
                wall, cpu = time.monotonic() - wall, time.process_time() - cpu
                print(
                    f"  {kept_as.value:<5} {size / 1e6:6.1f} MB in {wall:5.2f} s "
                    f"({size / 1e6 / wall:5.0f} MB/s), relay CPU {cpu:5.2f} s, "
                    f"store CPU {moto.cpu_seconds() - server_cpu:5.2f} s"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
