// Teacher studio: preview and device pickers, start/stop the lesson over WHIP, screen share as
// a second source, mute, the classrooms online, uplink health, and republishing after a drop.
import {Backoff, RoomEvents, grade, uplinkHealth, useIceServers, whip} from './client.js';
import {languageSwitch, pageConfig, t, token, translate} from './i18n.js';

const config = pageConfig();
useIceServers(config.iceServers);
const base = location.origin;
const $ = (id) => document.getElementById(id);
// a connection "disconnected" this long is treated as lost (ICE consent takes ~30 s to fail)
const DROP_GRACE_MS = 4000;

const studio = {
  stream: null, // camera + microphone
  camera: null, // WHIP session of the camera source
  screen: null, // WHIP session of the screen source
  screenStream: null,
  live: false,
  muted: false,
  reconnecting: false,
  backoff: new Backoff(1000, 10000),
  health: null,
};
window.ketangStudio = studio; // for support staff in the browser console, and tests

function setStatus(key, css) {
  const pill = $('status');
  pill.dataset.i18n = key;
  pill.dataset.state = key;
  pill.className = `pill ${css || ''}`;
  pill.textContent = t(key);
}

function showError(message) {
  $('error').textContent = message || '';
}

async function openDevices() {
  const video = $('camera').value ? {deviceId: {exact: $('camera').value}} : {width: 1280, height: 720};
  const audio = $('microphone').value ? {deviceId: {exact: $('microphone').value}} : true;
  const stream = await navigator.mediaDevices.getUserMedia({video, audio});
  if (studio.stream) studio.stream.getTracks().forEach((track) => track.stop());
  studio.stream = stream;
  stream.getAudioTracks().forEach((track) => (track.enabled = !studio.muted));
  $('preview').srcObject = stream;
  if (studio.camera) {
    // swap tracks on the live publication: classrooms see no interruption
    for (const sender of studio.camera.pc.getSenders()) {
      const next = stream.getTracks().find((track) => track.kind === sender.track?.kind);
      if (next) await sender.replaceTrack(next);
    }
  }
  await listDevices();
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [select, kind] of [[$('camera'), 'videoinput'], [$('microphone'), 'audioinput']]) {
    const current = studio.stream?.getTracks().find((tr) => `${tr.kind}input` === kind)?.getSettings().deviceId;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const option = new Option(d.label || `${t(kind === 'videoinput' ? 'camera' : 'microphone')} ${i + 1}`, d.deviceId);
      option.selected = d.deviceId === current;
      return option;
    }));
  }
}

function lessonInfo() {
  return {type: 'lesson', title: $('title').value, subject: $('subject').value, grade: $('grade').value, school: $('school').value};
}

async function publishCamera() {
  studio.camera = await whip(base, config.room, token(), studio.stream, 'camera');
  studio.cameraLost = watch(studio.camera, publishCamera);
  studio.backoff.reset();
  events.send(lessonInfo());
}

/** Republish a source whose connection died, with back-off, until the lesson is stopped. */
function watch(session, republish) {
  let timer = null;
  const lost = async () => {
    if (!studio.live || studio.reconnecting) return;
    studio.reconnecting = true;
    setStatus('reconnecting', 'warn');
    session.pc.close();
    while (studio.live) {
      try {
        await republish();
        setStatus('live', 'live');
        break;
      } catch (error) {
        await new Promise((resolve) => setTimeout(resolve, studio.backoff.next()));
      }
    }
    studio.reconnecting = false;
  };
  session.pc.addEventListener('connectionstatechange', () => {
    const state = session.pc.connectionState;
    clearTimeout(timer);
    if (state === 'failed') lost();
    else if (state === 'disconnected') timer = setTimeout(lost, DROP_GRACE_MS);
  });
  return lost;
}

async function start() {
  showError('');
  $('start').disabled = true;
  setStatus('connecting', 'warn');
  try {
    if (!studio.stream) await openDevices();
    studio.live = true;
    await publishCamera();
    setStatus('live', 'live');
    $('start').classList.add('hidden');
    $('stop').classList.remove('hidden');
    $('share').disabled = false;
  } catch (error) {
    studio.live = false;
    setStatus('notLive');
    showError(error.message);
  } finally {
    $('start').disabled = false;
  }
}

async function stop() {
  studio.live = false;
  await stopShare();
  if (studio.camera) await studio.camera.close();
  studio.camera = null;
  setStatus('notLive');
  $('stop').classList.add('hidden');
  $('start').classList.remove('hidden');
  $('share').disabled = true;
}

async function share() {
  if (studio.screen) return stopShare();
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({video: {frameRate: 15}, audio: false});
    studio.screenStream = stream;
    stream.getVideoTracks()[0].addEventListener('ended', stopShare);
    studio.screen = await whip(base, config.room, token(), stream, 'screen');
    $('screen-preview').srcObject = stream;
    $('screen-preview').classList.remove('hidden');
    $('share').dataset.i18n = 'stopShare';
    $('share').textContent = t('stopShare');
  } catch (error) {
    showError(error.message);
    await stopShare();
  }
}

async function stopShare() {
  const session = studio.screen;
  studio.screen = null;
  if (studio.screenStream) studio.screenStream.getTracks().forEach((track) => track.stop());
  studio.screenStream = null;
  $('screen-preview').classList.add('hidden');
  $('share').dataset.i18n = 'shareScreen';
  $('share').textContent = t('shareScreen');
  if (session) await session.close();
}

function toggleMute() {
  studio.muted = !studio.muted;
  studio.stream?.getAudioTracks().forEach((track) => (track.enabled = !studio.muted));
  $('mute').dataset.i18n = studio.muted ? 'unmute' : 'mute';
  $('mute').textContent = t($('mute').dataset.i18n);
  $('mute').classList.toggle('danger', studio.muted);
}

const GRADE_KEYS = ['offline', 'qualityPoor', 'qualityFair', 'qualityGood'];
const GRADE_CSS = ['', 'live', 'warn', 'ok'];

function renderRecording(state) {
  const failing = state.recording?.state === 'failing';
  $('recording-failing').classList.toggle('hidden', !failing);
  $('recording-problem').textContent = failing ? `(${state.recording.problem})` : '';
}

function renderClassrooms(state) {
  const list = $('classrooms');
  const rooms = state.classrooms || [];
  $('classroom-count').textContent = rooms.length;
  $('no-classrooms').classList.toggle('hidden', rooms.length > 0);
  list.replaceChildren(...rooms.map((room) => {
    const item = document.createElement('li');
    item.dataset.session = room.session;
    const name = document.createElement('span');
    name.textContent = room.name;
    const level = room.state === 'connected' ? grade(room.qoe || {}, null) || 3 : 0;
    const pill = document.createElement('span');
    pill.className = `pill ${GRADE_CSS[level]}`;
    const layer = room.layers.length ? ` · ${room.layers.join('/')}` : '';
    pill.textContent = (room.state === 'connected' ? t(GRADE_KEYS[level]) : t('connecting')) + layer;
    item.append(name, pill);
    return item;
  }));
}

async function showHealth() {
  if (!studio.camera) return;
  const health = await uplinkHealth(studio.camera.pc, studio.health);
  studio.health = health;
  $('up-bitrate').textContent = `${Math.round(health.bitrate / 1000)} kbps`;
  $('up-loss').textContent = `${(100 * health.fractionLost).toFixed(1)}%`;
  $('up-rtt').textContent = `${Math.round(1000 * health.roundTripTime)} ms`;
  const {at, bytes, ...stats} = health;
  events.send({type: 'uplink', stats});
}

const events = new RoomEvents(base, config.room, token());
events.addEventListener('state', (e) => {
  renderClassrooms(e.detail);
  renderRecording(e.detail);
});
events.addEventListener('event', (e) => {
  // the relay ended our publication (it lost our packets, or restarted): publish again
  const {event, session} = e.detail;
  if (event === 'source-ended' && session === studio.camera?.id) studio.cameraLost();
});
events.start();

translate();
languageSwitch($('lang'), () => events.state && renderClassrooms(events.state));
$('room-name').textContent = `${config.room} · ${config.name}`;
$('start').addEventListener('click', start);
$('stop').addEventListener('click', stop);
$('share').addEventListener('click', share);
$('mute').addEventListener('click', toggleMute);
$('camera').addEventListener('change', () => openDevices().catch((e) => showError(e.message)));
$('microphone').addEventListener('change', () => openDevices().catch((e) => showError(e.message)));
for (const id of ['title', 'subject', 'grade', 'school']) $(id).addEventListener('change', () => events.send(lessonInfo()));
setInterval(() => showHealth().catch(() => {}), 2000);
openDevices().catch((error) => showError(`${t('cameraError')}: ${error.message}`));
