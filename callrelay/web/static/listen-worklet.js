// Plays a live call in the browser: 16 kHz PCM per track arrives over Socket.IO in bursts,
// waits in a small jitter buffer, and comes out as one steady stream of the tracks chosen.

const START_SAMPLES = 3200; // 200 ms buffered before playing (and again after running dry)
const MAX_SAMPLES = 16000; // past 1 s behind, the oldest audio is dropped to catch up

class TrackBuffer {
  constructor() {
    this.chunks = [];
    this.offset = 0;
    this.length = 0;
  }
  push(samples) {
    this.chunks.push(samples);
    this.length += samples.length;
    while (this.length > MAX_SAMPLES) this.drop(this.chunks[0].length - this.offset);
  }
  drop(count) {
    this.length -= count;
    this.offset += count;
    while (this.chunks.length && this.offset >= this.chunks[0].length) {
      this.offset -= this.chunks[0].length;
      this.chunks.shift();
    }
  }
  take(out, count) {
    // Adds up to `count` samples into `out`; returns how many there were.
    let written = 0;
    while (written < count && this.chunks.length) {
      const chunk = this.chunks[0];
      const n = Math.min(count - written, chunk.length - this.offset);
      for (let i = 0; i < n; i++) out[written + i] += chunk[this.offset + i];
      written += n;
      this.drop(n);
    }
    return written;
  }
}

class ListenProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.tracks = { inbound: new TrackBuffer(), outbound: new TrackBuffer() };
    this.playing = { inbound: true, outbound: true };
    this.started = false;
    this.played = 0;
    this.underruns = 0;
    this.sinceReport = 0;
    this.port.onmessage = ({ data }) => {
      if (data.samples) this.tracks[data.track].push(data.samples);
      if (data.playing) this.playing = data.playing;
    };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    const chosen = Object.keys(this.tracks).filter((t) => this.playing[t]);
    const ready = Math.max(0, ...chosen.map((t) => this.tracks[t].length));
    if (!this.started && ready >= START_SAMPLES) this.started = true;
    if (this.started) {
      let got = 0;
      for (const track of chosen) got = Math.max(got, this.tracks[track].take(out, out.length));
      for (const track of Object.keys(this.tracks)) {
        if (!this.playing[track]) this.tracks[track].drop(Math.min(out.length, this.tracks[track].length));
      }
      this.played += got;
      if (got < out.length) {
        this.started = false;
        this.underruns += 1;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= 4000) {
      this.sinceReport = 0;
      this.port.postMessage({ played: this.played, queued: ready, underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("callrelay-listen", ListenProcessor);
