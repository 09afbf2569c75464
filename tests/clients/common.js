// What every client page shares: the test reads playback back through these, never the library.

// One <video> element on the page, as a player's host page has.
function videoElement() {
  const video = document.createElement('video');
  Object.assign(video, {autoplay: true, muted: true, playsInline: true});
  document.body.appendChild(video);
  return video;
}

// What a viewer would see of `pc` in `video`: the element's clock and frames, the decoder, the sound.
async function playback(video, pc) {
  const out = {currentTime: video.currentTime, totalVideoFrames: 0, framesDecoded: 0, audioSamples: 0};
  out.totalVideoFrames = video.getVideoPlaybackQuality().totalVideoFrames;
  out.audioTracks = pc.getReceivers().filter((r) => r.track.kind === 'audio' && r.track.readyState === 'live').length;
  out.connectionState = pc.connectionState;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.framesDecoded += s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioSamples += s.totalSamplesReceived || 0;
  });
  return out;
}

// The offer `pc` sent and the answer it got, as a failure report shows them.
function sdpShape(pc) {
  const shape = (description) => {
    const lines = ((description && description.sdp) || '').split('\r\n');
    return {
      mlines: lines.filter((l) => l.startsWith('m=')).map((l) => l.split(' ')[0].slice(2)),
      directions: lines.filter((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l)).map((l) => l.slice(2)),
      candidates: lines.filter((l) => l.startsWith('a=candidate:')).length,
      bundle: (lines.find((l) => l.startsWith('a=group:BUNDLE')) || '').slice(2),
    };
  };
  if (!pc) return 'no RTCPeerConnection';
  return {
    offer: shape(pc.localDescription), answer: shape(pc.remoteDescription),
    bundlePolicy: pc.getConfiguration().bundlePolicy, ice: pc.iceConnectionState, state: pc.connectionState,
  };
}
