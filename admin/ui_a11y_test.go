package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// colourJS are the colour helpers of the checks: CSS colour parsing,
// compositing, WCAG 2 relative luminance, the background an element is
// drawn on (composited from the root down) and contrast ratios.
const colourJS = `
  const parse = c => {
    const m = /rgba?\(([^)]+)\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({ r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1 });
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = el => {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.push(e);
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const e of chain.reverse()) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) bg = over(c, bg);
    }
    return bg;
  };
  const contrast = (a, b) => { const l1 = lum(a), l2 = lum(b); return (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05); };
`

// a11yScript checks the page it runs in and returns its problems (JSON
// list): every input, select and textarea has an accessible name; every
// image and SVG chart has a text alternative; every visible piece of text
// has a contrast of at least 4.5:1 with the background it is drawn on
// (colours from getComputedStyle, backgrounds composited from the root
// down, WCAG 2 relative luminance).
const a11yScript = `(() => {` + colourJS + `
  const problems = [];
  const describe = el => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    if (el.getAttribute("name")) s += "[name=" + el.getAttribute("name") + "]";
    if (typeof el.className === "string" && el.className.trim()) s += "." + el.className.trim().split(/\s+/).join(".");
    return s;
  };
  const shown = el => {
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== "hidden" && cs.display !== "none" && !el.closest(".sr-only");
  };
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    let name = (el.getAttribute("aria-label") || "").trim();
    if (!name && el.getAttribute("aria-labelledby")) {
      name = el.getAttribute("aria-labelledby").split(/\s+/).map(id => (document.getElementById(id) || {}).textContent || "").join(" ").trim();
    }
    if (!name && el.labels) name = Array.from(el.labels).map(l => l.textContent).join(" ").trim();
    if (!name) name = (el.getAttribute("title") || "").trim();
    if (!name) problems.push("no accessible label: " + describe(el));
  }
  for (const el of document.querySelectorAll("img, svg")) {
    if (el.closest("[aria-hidden=true]")) continue;
    const ok = el.tagName.toLowerCase() === "img" ? el.hasAttribute("alt") :
      ((el.getAttribute("aria-label") || "").trim() || el.getAttribute("aria-labelledby") || el.querySelector(":scope > title"));
    if (!ok) problems.push("image or chart without a text alternative: " + describe(el));
  }
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || !n.textContent.trim() || seen.has(el) || !shown(el)) continue;
    seen.add(el);
    const svg = el.closest("svg");
    const cs = getComputedStyle(el);
    const bg = background(svg ? svg.parentElement : el);
    const fg = over(parse(svg ? cs.fill : cs.color) || { r: 0, g: 0, b: 0, a: 1 }, bg);
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) {
      problems.push("contrast " + ratio.toFixed(2) + ":1 below 4.5:1: " + describe(el) + " " + JSON.stringify(n.textContent.trim().slice(0, 40)) +
        " (" + (svg ? cs.fill : cs.color) + " on rgb(" + [bg.r, bg.g, bg.b].map(Math.round).join(", ") + "))");
    }
  }
  return JSON.stringify(problems);
})()`

// overflowScript returns the elements that stick out of the viewport
// sideways, where the page itself scrolls horizontally (JSON list;
// empty when it does not).
const overflowScript = `(() => {
  const root = document.documentElement, w = root.clientWidth;
  if (root.scrollWidth <= w) return "[]";
  const out = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.right <= w + 1 || r.width === 0) continue;
    // a scroll box clips what is inside it, but not what is positioned
    // outside its flow
    let clipped = false;
    const positioned = /(absolute|fixed)/.test(getComputedStyle(el).position);
    for (let p = el.parentElement; p && p !== document.body && !positioned; p = p.parentElement) {
      if (/(auto|scroll|hidden|clip)/.test(getComputedStyle(p).overflowX)) { clipped = true; break; }
    }
    if (!clipped) out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (typeof el.className === "string" && el.className ? "." + el.className.split(" ").join(".") : "") + " ends at " + Math.round(r.right) + "px");
    if (out.length > 8) break;
  }
  return JSON.stringify(["the page is " + root.scrollWidth + "px wide in a " + w + "px viewport"].concat(out));
})()`

// focusScript describes the focused element and whether its focus ring
// shows: an outline at least 2px wide with a contrast of 3:1 (WCAG's
// non-text contrast) against the background around it, or a box shadow.
const focusScript = `(() => {` + colourJS + `
  const el = document.activeElement;
  if (!el || el === document.body) return JSON.stringify({ none: true });
  const cs = getComputedStyle(el);
  // the ring is drawn around the element, on its parent's background
  const ring = parse(cs.outlineColor);
  const outline = cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) >= 2 && ring &&
    contrast(over(ring, background(el.parentElement)), background(el.parentElement)) >= 3;
  return JSON.stringify({ what: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " " + (el.textContent || el.getAttribute("name") || "").trim().slice(0, 30),
    visible: outline || (cs.boxShadow && cs.boxShadow !== "none"), style: cs.outlineStyle + " " + cs.outlineWidth + " " + cs.outlineColor });
})()`

// checkScreen runs the accessibility checks on the page the browser
// shows (see screenProblems) and checks that it does not scroll sideways
// at the browser's width.
func checkScreen(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if over := overflowProblems(t, ctx); len(over) > 0 {
		t.Errorf("%s scrolls sideways:\n  %s", name, strings.Join(over, "\n  "))
	}
	if problems := screenProblems(t, ctx); len(problems) > 0 {
		t.Errorf("%s: accessibility problems:\n  %s", name, strings.Join(problems, "\n  "))
	}
}

// screenProblems runs a11yScript on the page the browser shows, then
// tabs through the keyboard order from the top (up to 60 stops) and checks
// that each stop shows its focus.
func screenProblems(t *testing.T, ctx context.Context) []string {
	t.Helper()
	eval := func(js string, v any) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("checking the page: %v", err)
		}
		if err := json.Unmarshal([]byte(s), v); err != nil {
			t.Fatalf("%v in %s", err, s)
		}
	}
	var problems []string
	eval(a11yScript, &problems)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.activeElement && document.activeElement.blur(), window.scrollTo(0, 0), true)`)); err != nil {
		t.Fatal(err)
	}
	// every stop, until the focus comes round to the first again
	tabbed, first := 0, ""
	for range 60 {
		if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
			t.Fatalf("pressing Tab: %v", err)
		}
		var f struct {
			None    bool   `json:"none"`
			What    string `json:"what"`
			Visible bool   `json:"visible"`
			Style   string `json:"style"`
		}
		eval(focusScript, &f)
		if f.None || f.What == first {
			break
		}
		if first == "" {
			first = f.What
		}
		tabbed++
		if !f.Visible {
			problems = append(problems, fmt.Sprintf("the keyboard focus on %q does not show (outline %s)", f.What, f.Style))
		}
	}
	if tabbed == 0 {
		problems = append(problems, "Tab reaches nothing on the page")
	}
	return problems
}

// overflowProblems reports what makes the page scroll sideways.
func overflowProblems(t *testing.T, ctx context.Context) []string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](overflowScript))
	if err != nil {
		t.Fatal(err)
	}
	var over []string
	if err := json.Unmarshal([]byte(s), &over); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	return over
}

// TestA11yChecksFindProblems: the checks the screens pass do find what
// they look for, on a page made of nothing else.
func TestA11yChecksFindProblems(t *testing.T) {
	needChromium(t)
	ctx, cancel := browser(t)
	defer cancel()
	page := `<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>bad</title></head><body>` +
		`<p style="color:#999">grey on white</p><p style="color:#fff;background:#fff8">white on white</p>` +
		`<input name="unnamed"><label>Named <input name="named"></label><select aria-label="picked"><option>x</option></select>` +
		`<svg width="10" height="10"><rect width="5" height="5"/></svg><svg role="img" aria-label="chart"><rect/></svg>` +
		`<a href="#x" style="outline:none">no ring</a><a href="#y" id="pale" style="outline:3px solid #ddd">pale ring</a><div style="width:900px">wide</div></body></html>`
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile),
		chromedp.Navigate("data:text/html;base64,"+base64.StdEncoding.EncodeToString([]byte(page)))); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(append(screenProblems(t, ctx), overflowProblems(t, ctx)...), "\n")
	for _, want := range []string{
		`contrast 2.85:1 below 4.5:1: p "grey on white"`,
		`contrast 1.00:1 below 4.5:1: p "white on white"`,
		"no accessible label: input[name=unnamed]",
		"image or chart without a text alternative: svg\n",
		`the keyboard focus on "a no ring" does not show`,
		`the keyboard focus on "a#pale pale ring" does not show`,
		"px wide in a 375px viewport\ndiv ends at ",
	} {
		if !strings.Contains(got+"\n", want) {
			t.Errorf("the checks missed %q; they found:\n%s", want, got)
		}
	}
	for _, clean := range []string{"input[name=named]", "select", "svg chart"} {
		if strings.Contains(got, "label: "+clean) {
			t.Errorf("the checks flag %s, which is labelled:\n%s", clean, got)
		}
	}
}

// checkPhone opens a screen at phone width (375 px), checks that nothing
// makes the page scroll sideways, runs checkScreen, and saves the
// screenshot <name>-phone (before tabbing, so without a focus ring).
func checkPhone(t *testing.T, ctx context.Context, url, waitSel, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile),
		chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(waitSel))); err != nil {
		t.Fatalf("%s at phone width: %v", name, err)
	}
	shot(t, ctx, name+"-phone")
	checkScreen(t, ctx, name+" at 375 px")
	if err := chromedp.Do(sctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
}
