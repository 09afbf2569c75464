// Course library: search recorded lessons, play with seeking (the screen share beside the
// camera, kept in step), download for offline use, delete (admins).
import {languageSwitch, pageConfig, t, token, translate} from './i18n.js';

const config = pageConfig();
const $ = (id) => document.getElementById(id);
const headers = {Authorization: `Bearer ${token()}`};
const withToken = (url) => `${url}?token=${encodeURIComponent(token())}`;
let lessons = [];
let current = null;

function describe(lesson) {
  const day = new Date(lesson.started * 1000).toLocaleString(document.documentElement.lang);
  const minutes = Math.max(1, Math.round(lesson.duration / 60));
  return [lesson.teacher, lesson.school, lesson.subject, lesson.grade, day, `${minutes} min`,
    `${(lesson.size / 1e6).toFixed(1)} MB`].filter(Boolean).join(' · ');
}

function card(lesson) {
  const item = document.createElement('div');
  item.className = 'lesson-card';
  item.dataset.id = lesson.id;
  const image = document.createElement('img');
  image.alt = '';
  if (lesson.poster_url) image.src = withToken(lesson.poster_url);
  const title = document.createElement('h3');
  title.textContent = lesson.title || lesson.room;
  const about = document.createElement('p');
  about.className = 'muted';
  about.textContent = describe(lesson);
  const play = document.createElement('button');
  play.className = 'primary';
  play.textContent = t('play');
  play.addEventListener('click', () => open(lesson));
  item.append(image, title, about, play);
  if (config.role === 'admin') {
    const remove = document.createElement('button');
    remove.className = 'danger';
    remove.textContent = t('delete');
    remove.addEventListener('click', () => removeLesson(lesson));
    item.append(remove);
  }
  return item;
}

function render() {
  $('lessons').replaceChildren(...lessons.map(card));
  $('no-lessons').classList.toggle('hidden', lessons.length > 0);
}

async function search(event) {
  event?.preventDefault();
  const query = new URLSearchParams({q: $('q').value});
  if ($('since').value) query.set('since', $('since').value);
  if ($('until').value) query.set('until', $('until').value);
  const response = await fetch(`/api/library?${query}`, {headers});
  lessons = response.ok ? (await response.json()).lessons : [];
  render();
}

/** Play a lesson: the screen share (if any) large with sound from the camera file, in step. */
function open(lesson) {
  current = lesson;
  const main = $('lesson-main');
  const side = $('lesson-side');
  main.src = withToken(lesson.urls.camera || lesson.urls.screen);
  const screen = lesson.urls.camera && lesson.urls.screen;
  side.classList.toggle('hidden', !screen);
  side.src = screen ? withToken(lesson.urls.screen) : '';
  $('player-title').textContent = lesson.title || lesson.room;
  $('player-meta').textContent = describe(lesson);
  $('download').href = `${withToken(lesson.urls.camera || lesson.urls.screen)}&download=1`;
  $('download-screen').classList.toggle('hidden', !screen);
  if (screen) $('download-screen').href = `${withToken(lesson.urls.screen)}&download=1`;
  $('player-panel').classList.remove('hidden');
  $('player-panel').scrollIntoView();
  main.play().catch(() => {});
}

/** Keep the screen-share video at the camera's moment (files start at their own offsets). */
function follow() {
  const side = $('lesson-side');
  if (!current || side.classList.contains('hidden')) return;
  const files = current.files;
  const at = $('lesson-main').currentTime + files.camera.offset - files.screen.offset;
  if (at < 0 || at > side.duration) return;
  if (Math.abs(side.currentTime - at) > 0.5) side.currentTime = at;
  if ($('lesson-main').paused !== side.paused) ($('lesson-main').paused ? side.pause() : side.play().catch(() => {}));
}

async function removeLesson(lesson) {
  if (!confirm(`${t('delete')}: ${lesson.title || lesson.id}?`)) return;
  const response = await fetch(`/api/library/${lesson.id}`, {method: 'DELETE', headers});
  if (response.ok) await search();
}

translate();
languageSwitch($('lang'), render);
$('search').addEventListener('submit', search);
for (const name of ['timeupdate', 'seeked', 'play', 'pause']) $('lesson-main').addEventListener(name, follow);
search();
