// Package ui holds the operator UI's embedded files: html/template pages
// (templates/) and static assets (assets/: stylesheet, scripts). Nothing
// here needs a build step.
package ui

import "embed"

// Assets are served under /assets/ by http.FileServerFS.
//
//go:embed assets
var Assets embed.FS

// Templates are the pages, each defining "content" inside layout.html.
//
//go:embed templates
var Templates embed.FS
