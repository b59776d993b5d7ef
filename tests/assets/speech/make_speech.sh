#!/usr/bin/env bash
# Regenerates the two spoken test files used by the echo-cancellation tests (espeak-ng + sox):
# moshi.wav stands in for Moshi's voice (what the speaker plays), user.wav for the user talking over it.
# 24 kHz mono 16-bit, peak-normalised to -3 dBFS. Run from this folder.
set -euo pipefail
espeak-ng -v en-us -s 150 -w /tmp/moshi_raw.wav "Hello there, I am Moshi, a speech model that listens and \
talks at the same time. Today we test whether I can still hear you while I am speaking through the \
laptop speakers. The weather is nice and the coffee is warm, so let us keep talking for a while."
espeak-ng -v en-gb+f3 -s 160 -w /tmp/user_raw.wav "Please stop for a moment, I would like to ask you \
a question about the train to Paris tomorrow morning."
sox /tmp/moshi_raw.wav -r 24000 -b 16 -c 1 moshi.wav norm -3
sox /tmp/user_raw.wav -r 24000 -b 16 -c 1 user.wav norm -3
rm -f /tmp/moshi_raw.wav /tmp/user_raw.wav
