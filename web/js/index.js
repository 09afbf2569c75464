// The landing page: translated, with its language switch (no inline script: the pages' CSP).
import {languageSwitch, translate} from '/static/js/i18n.js';

translate();
languageSwitch(document.getElementById('lang'));
