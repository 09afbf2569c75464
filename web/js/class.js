// Classroom projector player: one click to start (full screen, sound), then it runs by itself:
// waits for the lesson, shows the screen share large with the teacher as picture-in-picture,
// reconnects with back-off, keeps the screen awake, and reports its quality to the relay.
import {Backoff, RoomEvents, grade, playbackQoe, useIceServers, whep} from './client.js';
import {languageSwitch, pageConfig, t, token, translate} from './i18n.js';

const config = pageConfig();
useIceServers(config.iceServers);
const base = location.origin;
const $ = (id) => document.getElementById(id);
const STARTED_KEY = `ketang.started.${config.room}`;
const LOW_KEY = 'ketang.low';
const DROP_GRACE_MS = 3000; // "disconnected" this long counts as a lost connection
const QOE_INTERVAL_MS = 5000;

const player = {
  playback: null,
  streams: {camera: new MediaStream(), screen: new MediaStream(), audio: new MediaStream()},
  backoff: new Backoff(1000, 30000),
  reconnecting: false,
  wasLive: false,
  low: localStorage.getItem(LOW_KEY) === '1',
  wakeLock: null,
  qoe: null,
  reconnects: 0,
};
window.ketangPlayer = player; // for support staff in the browser console, and tests

function show(id, visible) {
  $(id).classList.toggle('hidden', !visible);
}

function onTrack(track, slot) {
  const stream = player.streams[slot];
  stream.getTracks().forEach((old) => stream.removeTrack(old));
  stream.addTrack(track);
  layout();
}

/** Screen share large with the camera as picture-in-picture, else the camera full screen. */
function layout() {
  const state = events.state;
  const live = new Set((state?.sources || []).map((s) => s.source));
  const screen = live.has('screen');
  const main = screen ? player.streams.screen : player.streams.camera;
  if ($('main').srcObject !== main) $('main').srcObject = main;
  const pip = screen && live.has('camera') ? player.streams.camera : null;
  if ($('pip').srcObject !== pip) $('pip').srcObject = pip;
  show('pip', Boolean(pip));
  document.body.dataset.layout = screen ? 'screen' : 'camera';
  const waiting = state && !state.live;
  if (state?.live) player.wasLive = true;
  $('waiting-title').dataset.i18n = player.wasLive ? 'ended' : 'waiting';
  $('waiting-title').textContent = t($('waiting-title').dataset.i18n);
  const lesson = state?.lesson ? [state.lesson.title, state.lesson.subject, state.lesson.grade].filter(Boolean).join(' · ') : '';
  $('waiting-lesson').textContent = lesson;
  $('start-lesson').textContent = lesson;
  show('waiting-screen', Boolean(waiting) && $('start-screen').classList.contains('hidden'));
}

async function connect() {
  show('connection', player.reconnecting);
  try {
    const playback = await whep(base, config.room, token(), onTrack, player.low ? 'low' : null);
    player.playback = playback;
    watch(playback);
    player.backoff.reset();
    player.reconnecting = false;
    show('connection', false);
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      location.reload(); // the relay explains a bad or expired link on the page itself
      return;
    }
    retry();
  }
}

function watch(playback) {
  let timer = null;
  playback.pc.addEventListener('connectionstatechange', () => {
    const state = playback.pc.connectionState;
    clearTimeout(timer);
    if (playback !== player.playback) return;
    if (state === 'failed' || state === 'closed') lost();
    else if (state === 'disconnected') timer = setTimeout(lost, DROP_GRACE_MS);
  });
}

/** The connection is gone: show it, close what is left, and try again after a back-off. */
function lost() {
  if (player.reconnecting) return;
  player.reconnecting = true;
  player.reconnects += 1;
  const old = player.playback;
  player.playback = null;
  if (old) old.close();
  retry();
}

function retry() {
  player.reconnecting = true;
  show('connection', true);
  setTimeout(connect, player.backoff.next());
}

async function begin(withGesture) {
  localStorage.setItem(STARTED_KEY, '1');
  show('start-screen', false);
  if (withGesture && document.fullscreenEnabled) {
    document.documentElement.requestFullscreen().catch(() => {});
  }
  $('sound').srcObject = player.streams.audio;
  $('sound').play().then(() => show('sound-off', false), () => show('sound-off', true));
  keepAwake();
  layout();
  await connect();
}

async function keepAwake() {
  try {
    player.wakeLock = await navigator.wakeLock?.request('screen');
  } catch (error) {
    player.wakeLock = null; // not allowed here (hidden tab, policy): the lesson still plays
  }
}

async function report() {
  const playback = player.playback;
  if (!playback || playback.pc.connectionState !== 'connected') {
    $('bars').className = 'bars q0';
    $('quality-text').textContent = t('offline');
    return;
  }
  const qoe = await playbackQoe(playback.pc);
  const level = grade(qoe, player.qoe);
  player.qoe = qoe;
  show('hud', true);
  $('bars').className = `bars q${level}`;
  const size = qoe.frameHeight ? `${qoe.frameHeight}p · ${Math.round(qoe.framesPerSecond)} fps` : '';
  $('quality-text').textContent = [t(['offline', 'qualityPoor', 'qualityFair', 'qualityGood'][level]), size].filter(Boolean).join(' · ');
}

function sendQoe() {
  if (player.playback && player.qoe) events.send({type: 'qoe', session: player.playback.id, stats: player.qoe});
}

function toggleLow() {
  player.low = !player.low;
  localStorage.setItem(LOW_KEY, player.low ? '1' : '0');
  $('low').classList.toggle('on', player.low);
  if (player.playback) {
    const old = player.playback;
    player.playback = null;
    old.close();
    connect();
  }
}

const events = new RoomEvents(base, config.room, token());
events.addEventListener('state', layout);
events.addEventListener('event', (e) => {
  // the relay ended this classroom's session (it restarted, or dropped a dead link)
  if (e.detail.event === 'classroom-left' && e.detail.session === player.playback?.id) lost();
});
events.start();

translate();
languageSwitch($('lang'), layout);
$('start-name').textContent = config.name;
$('waiting-name').textContent = `${config.room} · ${config.name}`;
$('low').classList.toggle('on', player.low);
$('low').addEventListener('click', toggleLow);
$('start').addEventListener('click', () => begin(true));
document.addEventListener('click', () => {
  if (!$('sound-off').classList.contains('hidden')) $('sound').play().then(() => show('sound-off', false), () => {});
});
document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && keepAwake());
setInterval(() => report().catch(() => {}), 2000);
setInterval(sendQoe, QOE_INTERVAL_MS);
if (localStorage.getItem(STARTED_KEY) === '1') begin(false); // started before: survive reloads
