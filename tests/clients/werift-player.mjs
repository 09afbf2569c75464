// A WHEP player on werift, a WebRTC stack in TypeScript that shares no code with aiortc or Chromium.
//
//   node werift-player.mjs URL TOKEN SECONDS [video-first]
//
// It builds a werift RTCPeerConnection with werift's default configuration, adds recvonly
// transceivers (audio then video, or video then audio with `video-first`), waits for ICE
// gathering to complete, POSTs the whole offer to URL and applies the answer. From the first
// complete VP8 frame on it counts, for SECONDS, RTP packets of each kind and video frames (packets
// with the marker bit), then DELETEs the session and prints one JSON line on stdout:
//   {"video_frames":N,"video_packets":N,"audio_packets":N,"seconds":S,"first_frame_ms":T,...}
// On any failure it prints {"error":"..."} instead and exits 1, after DELETEing a session it made.

import {RTCPeerConnection} from 'werift';

const GATHER_TIMEOUT_MS = 15000; // werift tries its default STUN server too; offline it gives up
const MEDIA_TIMEOUT_MS = 15000; // from the POST to the first complete video frame
const HTTP_TIMEOUT_MS = 10000;
const CLOSE_TIMEOUT_MS = 3000;

const [url, token, secondsArg, order] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!url || !token || !(seconds > 0) || (order !== undefined && order !== 'video-first')) {
  fail('usage: node werift-player.mjs URL TOKEN SECONDS [video-first]');
}

// A promise that rejects with `what` after `ms`, raced against the real wait.
function deadline(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref());
}

function print(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}

function fail(message, extra = {}) {
  print({error: message, ...extra});
  process.exit(1);
}

async function request(method, target, body) {
  const headers = {Authorization: `Bearer ${token}`};
  if (body !== undefined) headers['Content-Type'] = 'application/sdp';
  return fetch(target, {method, headers, body, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS)});
}

// What arrived, per kind, inside `span`: SECONDS from the first complete video frame on.
const counts = {video_frames: 0, video_packets: 0, audio_packets: 0};
let span = null; // {start, end} in performance.now() ms once the first frame is in
let firstFrame = null;
let firstFrameAt = null;

function arrived(kind, rtp) {
  const now = performance.now();
  const frameEnds = kind === 'video' && rtp.header.marker;
  if (span === null) {
    if (!frameEnds) return;
    span = {start: now, end: now + seconds * 1000};
    firstFrameAt = now;
    firstFrame();
    return; // this frame ends before the span opens: it is counted as first_frame_ms
  }
  if (now > span.end) return;
  if (kind === 'video') {
    counts.video_packets += 1;
    if (frameEnds) counts.video_frames += 1;
  } else {
    counts.audio_packets += 1;
  }
}

const pc = new RTCPeerConnection(); // werift's defaults, on purpose
let location = null;
const states = [];
pc.connectionStateChange.subscribe((state) => states.push(state));

async function ending() {
  // DELETE first: the relay must drop the session even if werift's close() were to hang
  let deleted = null;
  if (location !== null) {
    const response = await request('DELETE', location);
    deleted = response.status;
    location = null;
  }
  await Promise.race([pc.close(), deadline(CLOSE_TIMEOUT_MS, 'werift close()')]).catch(() => {});
  return deleted;
}

async function main() {
  const kinds = order === 'video-first' ? ['video', 'audio'] : ['audio', 'video'];
  for (const kind of kinds) pc.addTransceiver(kind, {direction: 'recvonly'});
  pc.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => arrived(track.kind, rtp));
  });
  const framed = new Promise((resolve) => {
    firstFrame = resolve;
  });

  const gatherStart = performance.now();
  const gathered = pc.iceGatheringState === 'complete' ? Promise.resolve() :
    pc.iceGatheringStateChange.watch((state) => state === 'complete');
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([gathered, deadline(GATHER_TIMEOUT_MS, 'ICE gathering')]);
  const gatherMs = performance.now() - gatherStart;
  const offer = pc.localDescription.sdp;

  const posted = performance.now();
  const response = await request('POST', url, offer);
  const answer = await response.text();
  if (response.status !== 201) {
    throw new Error(`POST answered ${response.status}: ${answer.slice(0, 300)}`);
  }
  const header = response.headers.get('Location');
  if (!header) throw new Error('201 without a Location header');
  location = new URL(header, url).href;
  await pc.setRemoteDescription({type: 'answer', sdp: answer});

  await Promise.race([framed, deadline(MEDIA_TIMEOUT_MS, `a complete video frame (states: ${states})`)]);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000 + 50));
  const result = {
    ...counts,
    seconds,
    first_frame_ms: Math.round(firstFrameAt - posted),
    gather_ms: Math.round(gatherMs),
    candidates: offer.split('\r\n').filter((line) => line.startsWith('a=candidate:')).length,
    order: kinds.join(','),
  };
  const deleted = await ending();
  if (deleted !== 200 && deleted !== 204) throw new Error(`DELETE answered ${deleted}`);
  print(result);
  process.exit(0);
}

main().catch(async (error) => {
  const message = error && error.message ? error.message : String(error);
  let deleted = null;
  try {
    deleted = await ending();
  } catch (cleanup) {
    deleted = `failed: ${cleanup.message}`;
  }
  fail(message, {...counts, delete_status: deleted, states});
});
