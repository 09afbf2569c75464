// Minimal WHIP publisher and WHEP player for browser tests: what any client does, without our pages.

async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  const response = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token},
    body: pc.localDescription.sdp,
  });
  const answer = await response.text();
  if (response.status !== 201) return {status: response.status, body: answer};
  await pc.setRemoteDescription({type: 'answer', sdp: answer});
  window.pc = pc;
  return {status: response.status, location: response.headers.get('Location')};
}

async function publish(url, token) {
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 360}});
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  return negotiate(pc, url, token);
}

async function play(url, token) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const video = document.createElement('video');
  Object.assign(video, {autoplay: true, muted: true, playsInline: true, srcObject: new MediaStream()});
  document.body.appendChild(video);
  pc.ontrack = (event) => video.srcObject.addTrack(event.track);
  return negotiate(pc, url, token);
}

async function inbound() {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp') out[s.kind] = s;
  });
  return out;
}
