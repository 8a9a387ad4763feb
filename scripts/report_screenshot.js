// Screenshots of a Snakemake report in headless Chromium: the front page, the Plots category and
// the first plot opened, to check that the report renders and embeds its figures.
//   npm install puppeteer-core   (with PUPPETEER_SKIP_DOWNLOAD=1; uses the system's chromium)
//   node scripts/report_screenshot.js results/report.html OUT_PREFIX
const path = require('path');
const puppeteer = require('puppeteer-core');

(async () => {
  const [report, prefix = 'report'] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'],
  });
  const page = await browser.newPage();
  await page.setViewport({width: 1400, height: 1000});
  await page.goto('file://' + path.resolve(report), {waitUntil: 'networkidle0'});
  await page.screenshot({path: `${prefix}_front.png`});
  const clickText = async (text) => {  // a real mouse click on the innermost element showing exactly this text
    const handle = await page.evaluateHandle((t) => [...document.querySelectorAll('a, button, li, span, div')]
      .filter((e) => e.innerText && e.innerText.trim() === t).pop() || null, text);
    const el = handle.asElement();
    if (el) await el.click();
    return Boolean(el);
  };
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  console.log('Plots category:', await clickText('Plots'));
  await pause(1500);
  await page.screenshot({path: `${prefix}_plots.png`});
  const opened = await page.evaluate(() => {
    const row = [...document.querySelectorAll('*')].filter((e) => e.innerText && e.innerText.trim() === 'results/plots/methods.png').pop();
    for (let e = row, i = 0; e && i < 4; e = e.parentElement, i++) {
      const icon = e.querySelector('svg, button, a');
      if (icon) { (icon.closest('a, button') || icon).dispatchEvent(new MouseEvent('click', {bubbles: true})); return true; }
    }
    return false;
  });
  console.log('methods.png opened:', opened);
  await pause(2000);
  await page.screenshot({path: `${prefix}_methods.png`});
  await browser.close();
})();
