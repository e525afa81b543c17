#!/usr/bin/env bash
# Debian packages the product needs beside Python: a Japanese font for invoice PDFs
# (fonts-noto-cjk, fontconfig, libharfbuzz-subset0), pango for WeasyPrint, and pdftotext (poppler-utils)
# for the tests, gettext (msgfmt) for the Japanese catalog, and Chromium for the browser tests (tests/e2e, driven by Playwright).
# Installs what is missing when run as root (or with sudo); otherwise says what to install.
set -euo pipefail
missing=()
fc-list :lang=ja 2>/dev/null | grep -q . || missing+=(fonts-noto-cjk)
ldconfig -p 2>/dev/null | grep -q libpango-1.0 || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
command -v pdftotext >/dev/null || missing+=(poppler-utils)
command -v fc-list >/dev/null || missing+=(fontconfig)
ldconfig -p 2>/dev/null | grep -q libharfbuzz-subset || missing+=(libharfbuzz-subset0)
command -v chromium >/dev/null || missing+=(chromium)
command -v msgfmt >/dev/null || missing+=(gettext)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "Missing system packages: ${missing[*]}. Install them with: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
