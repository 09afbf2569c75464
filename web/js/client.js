// Ketang signalling client: WHIP publish, WHEP play, the room event stream and getStats
// summaries. No DOM code here: the pages (teach.js, class.js, admin.js) own the screen.
// Plain ES2020 for Chromium 109 (the last Chromium on Windows 7 school PCs).

const ICE_GATHER_MS = 3000; // no trickle (WHIP/WHEP without PATCH): wait for candidates, bounded

/** Exponential back-off with jitter: 1 s, 2 s, 4 s ... up to `max` ms. */
export class Backoff {
  constructor(min = 1000, max = 30000) {
    this.min = min;
    this.max = max;
    this.attempt = 0;
  }
  next() {
    const delay = Math.min(this.max, this.min * 2 ** this.attempt);
    this.attempt += 1;
    return delay * (0.75 + Math.random() * 0.5);
  }
  reset() {
    this.attempt = 0;
  }
}

export class SignallingError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}: ${String(body).trim()}`);
    this.status = status;
  }
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const timer = setTimeout(resolve, ICE_GATHER_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** Offer, POST it with the token, apply the answer; returns the session URL. */
async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const response = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/sdp', Authorization: `Bearer ${token}`},
    body: pc.localDescription.sdp,
  });
  const body = await response.text();
  if (response.status !== 201) throw new SignallingError(response.status, body);
  await pc.setRemoteDescription({type: 'answer', sdp: body});
  return new URL(response.headers.get('Location'), url).toString();
}

async function endSession(location, token) {
  try {
    await fetch(location, {method: 'DELETE', headers: {Authorization: `Bearer ${token}`}});
  } catch (error) {
    // the relay is unreachable: it ends the session itself when the connection dies
  }
}

/** A live WHIP or WHEP session. */
class Session {
  constructor(pc, location, token) {
    this.pc = pc;
    this.location = location;
    this.token = token;
    this.id = location.split('/').pop();
  }
  async close() {
    this.pc.close();
    await endSession(this.location, this.token);
  }
}

// ICE servers for every peer connection: the page's own, TURN credentials included, which
// the relay puts in the page's config (a school behind a firewall needs TURN from the start).
let iceServers = [];

/** Use these RTCIceServer entries for the peer connections made from now on. */
export function useIceServers(servers) {
  iceServers = Array.isArray(servers) ? servers : [];
}

/** Publish `stream` as the room's `source` ("camera" or "screen") over WHIP. */
export async function whip(base, room, token, stream, source) {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle', iceServers});
  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
  try {
    const url = `${base}/whip/${encodeURIComponent(room)}?source=${source}`;
    return new Session(pc, await negotiate(pc, url, token), token);
  } catch (error) {
    pc.close();
    throw error;
  }
}

/** Play the room over WHEP: audio, the camera slot, the screen slot. `onTrack(track, slot)`
 * gets slot "audio", "camera" or "screen". `quality` caps the picture ("low", "audio"). */
export async function whep(base, room, token, onTrack, quality = null) {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle', iceServers});
  const slots = new Map();
  slots.set(pc.addTransceiver('audio', {direction: 'recvonly'}), 'audio');
  slots.set(pc.addTransceiver('video', {direction: 'recvonly'}), 'camera');
  slots.set(pc.addTransceiver('video', {direction: 'recvonly'}), 'screen');
  pc.addEventListener('track', (event) => onTrack(event.track, slots.get(event.transceiver)));
  try {
    const query = quality ? `?quality=${encodeURIComponent(quality)}` : '';
    const url = `${base}/whep/${encodeURIComponent(room)}${query}`;
    return new Session(pc, await negotiate(pc, url, token), token);
  } catch (error) {
    pc.close();
    throw error;
  }
}

/** The room's event stream: dispatches "hello", "state", "event", "error" and "status"
 * (detail: "open" | "closed"), and reconnects with back-off until close(). */
export class RoomEvents extends EventTarget {
  constructor(base, room, token) {
    super();
    const url = new URL(`${base}/api/rooms/${encodeURIComponent(room)}/events`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    this.url = url.toString();
    this.backoff = new Backoff(1000, 15000);
    this.socket = null;
    this.closed = false;
    this.state = null;
  }
  start() {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.backoff.reset();
      this._emit('status', 'open');
    });
    socket.addEventListener('message', (message) => {
      const data = JSON.parse(message.data);
      if (data.type === 'state') this.state = data;
      this._emit(data.type, data);
    });
    socket.addEventListener('close', () => {
      this._emit('status', 'closed');
      if (!this.closed) setTimeout(() => this.start(), this.backoff.next());
    });
    return this;
  }
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }
  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}

function byType(report, type) {
  const out = [];
  report.forEach((s) => {
    if (s.type === type) out.push(s);
  });
  return out;
}

/** A classroom's quality of experience from getStats, summed over its video and audio. */
export async function playbackQoe(pc) {
  const inbound = byType(await pc.getStats(), 'inbound-rtp');
  const video = inbound.filter((s) => s.kind === 'video' && s.framesDecoded > 0);
  const audio = inbound.filter((s) => s.kind === 'audio');
  const sum = (list, key) => list.reduce((total, s) => total + (s[key] || 0), 0);
  // the picture on screen: a stream still playing beats one that stopped (a screen share that
  // ended keeps its last size with 0 fps), then the larger one
  const rank = (s) => (s ? [(s.framesPerSecond || 0) > 0 ? 1 : 0, s.frameWidth || 0] : [-1, -1]);
  const better = (a, b) => { const [x, y] = [rank(a), rank(b)]; return x[0] !== y[0] ? x[0] > y[0] : x[1] > y[1]; };
  const main = video.reduce((best, s) => (better(s, best) ? s : best), null);
  const emitted = sum(video, 'jitterBufferEmittedCount');
  const samples = sum(audio, 'totalSamplesReceived');
  return {
    freezeCount: sum(video, 'freezeCount'),
    totalFreezesDuration: sum(video, 'totalFreezesDuration'),
    framesPerSecond: main?.framesPerSecond || 0,
    frameWidth: main?.frameWidth || 0,
    frameHeight: main?.frameHeight || 0,
    framesDecoded: sum(video, 'framesDecoded'),
    packetsLost: sum(inbound, 'packetsLost'),
    packetsReceived: sum(inbound, 'packetsReceived'),
    jitterBufferDelay: emitted ? sum(video, 'jitterBufferDelay') / emitted : 0,
    concealedSamples: sum(audio, 'concealedSamples'),
    totalSamplesReceived: samples,
    concealmentRatio: samples ? sum(audio, 'concealedSamples') / samples : 0,
  };
}

/** The teacher's uplink: bitrate since `previous` (pass the last result), loss and RTT. */
export async function uplinkHealth(pc, previous = null) {
  const report = await pc.getStats();
  const outbound = byType(report, 'outbound-rtp');
  const remote = byType(report, 'remote-inbound-rtp');
  const bytes = outbound.reduce((total, s) => total + (s.bytesSent || 0), 0);
  const now = performance.now();
  const seconds = previous ? (now - previous.at) / 1000 : 0;
  const video = outbound.find((s) => s.kind === 'video');
  const lossy = remote.reduce((worst, s) => Math.max(worst, s.fractionLost || 0), 0);
  const rtts = remote.map((s) => s.roundTripTime).filter((v) => typeof v === 'number');
  return {
    at: now,
    bytes,
    bitrate: seconds > 0 ? Math.max(0, (8 * (bytes - previous.bytes)) / seconds) : 0,
    packetsLost: remote.reduce((total, s) => total + (s.packetsLost || 0), 0),
    fractionLost: lossy,
    roundTripTime: rtts.length ? Math.max(...rtts) : 0,
    framesPerSecond: video?.framesPerSecond || 0,
  };
}

/** A rough 0-3 quality grade of a playback, for the small indicator. */
export function grade(qoe, previous) {
  if (!qoe.framesDecoded && !qoe.totalSamplesReceived) return 0;
  const lost = previous ? qoe.packetsLost - previous.packetsLost : 0;
  const received = previous ? qoe.packetsReceived - previous.packetsReceived : 1;
  const loss = received > 0 ? lost / (lost + received) : 0;
  const froze = previous ? qoe.totalFreezesDuration - previous.totalFreezesDuration : 0;
  if (froze > 1 || loss > 0.1) return 1;
  if (froze > 0 || loss > 0.02 || (qoe.frameHeight && qoe.frameHeight < 300)) return 2;
  return 3;
}
