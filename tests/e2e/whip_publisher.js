// A minimal WHIP publisher for tests: camera and microphone from Chromium's fake devices.
async function publish(url, token) {
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 360}});
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
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
  return {status: response.status};
}
