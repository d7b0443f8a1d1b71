#!/bin/bash
# data/points/make.sh: how data/points was made (data/SOURCES): the digits 0-9 of 79 fonts from
# Debian 12's font packages as 512-point outline samples (build/tasks/points/points-glyphs),
# split by font family: no test shape's family (nor a family derived from it) is in train.
#   apt-get install fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-freefont-ttf fonts-urw-base35
#   bash data/points/make.sh build
set -euo pipefail
cd "$(dirname "$0")/../.."
glyphs=${1:-build}/tasks/points/points-glyphs
tt=/usr/share/fonts/truetype otf=/usr/share/fonts/opentype/urw-base35
# train: DejaVu Sans and Sans Mono; Liberation Serif and Mono; the Helvetica and Times lineages
# (Nimbus Sans, Sans Narrow, Roman and their GNU FreeFont derivatives FreeSans, FreeSerif);
# C059 (Century Schoolbook), URW Bookman, Z003 (Zapf Chancery)
train=($tt/dejavu/DejaVuSans{,-Bold,-Oblique,-BoldOblique,-ExtraLight,Condensed,Condensed-Bold}.ttf
       $tt/dejavu/DejaVuSansMono{,-Bold,-Oblique,-BoldOblique}.ttf
       $tt/liberation/Liberation{Serif,Mono}-{Regular,Bold,Italic,BoldItalic}.ttf
       $tt/freefont/FreeSans{,Bold,Oblique,BoldOblique}.ttf $tt/freefont/FreeSerif{,Bold,Italic,BoldItalic}.ttf
       $otf/NimbusSans-{Regular,Bold,Italic,BoldItalic}.otf $otf/NimbusSansNarrow-{Regular,Bold,Oblique,BoldOblique}.otf
       $otf/NimbusRoman-{Regular,Bold,Italic,BoldItalic}.otf
       $otf/C059-{Roman,Bold,Italic,BdIta}.otf $otf/URWBookman-{Light,Demi,LightItalic,DemiItalic}.otf
       $otf/Z003-MediumItalic.otf)
# test: DejaVu Serif; Liberation Sans and Sans Narrow; the Courier lineage (Nimbus Mono PS,
# FreeMono); P052 (Palatino); URW Gothic (Avant Garde)
test=($tt/dejavu/DejaVuSerif{,-Bold,-Italic,-BoldItalic,Condensed,Condensed-Bold,Condensed-Italic}.ttf
      $tt/liberation/LiberationSans{,Narrow}-{Regular,Bold,Italic,BoldItalic}.ttf
      $tt/freefont/FreeMono{,Bold,Oblique,BoldOblique}.ttf
      $otf/NimbusMonoPS-{Regular,Bold,Italic,BoldItalic}.otf
      $otf/P052-{Roman,Bold,Italic,BoldItalic}.otf $otf/URWGothic-{Book,Demi,BookOblique,DemiOblique}.otf)
rm -rf data/points/train data/points/test
"$glyphs" data/points/train 512 0123456789 "${train[@]}"
"$glyphs" data/points/test 512 0123456789 "${test[@]}"
