"""Render docs/img/terminal-chat.png: a captured terminal-chat session beside the images it made.

The picture in the README is made from a real session, not drawn by hand:

    # in a folder with config.toml = [model] name = "tiny" (and no chat tokens set)
    tmux new-session -d -s shot -x 92 -y 26 "imagine-bot run --model tiny"
    tmux send-keys -t shot '/imagine a red fox in the snow, watercolor --n 4 --seed 7' Enter
    tmux send-keys -t shot '/rate 1 5' Enter ; tmux send-keys -t shot '/quota' Enter
    tmux send-keys -t shot '/history' Enter
    tmux capture-pane -p -t shot > pane.txt
    python docs/screenshot.py pane.txt out/<job>-1.png … out/<job>-4.png

The tiny model has random weights, so its images are noise: the picture shows the chat, not a
model's quality.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BG, FG, PROMPT = (30, 32, 38), (222, 222, 222), (120, 200, 255)


def render(pane: list[str], images: list[Path], out: Path, size: int = 15) -> None:
    font = ImageFont.truetype(FONT, size)
    while pane and not pane[-1].strip():
        pane.pop()
    line_h = size + 5
    char_w = font.getlength("M")
    text_w = int(char_w * max(len(line) for line in pane)) + 40
    text_h = line_h * len(pane) + 40
    tile = (text_h - 50) // 2
    grid_w = 2 * tile + 30 if images else 0
    canvas = Image.new("RGB", (text_w + grid_w, text_h), BG)
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(pane):
        color = PROMPT if line.startswith("imagine>") else FG
        draw.text((20, 20 + row * line_h), line, font=font, fill=color)
    for i, path in enumerate(images[:4]):
        picture = Image.open(path).convert("RGB").resize((tile, tile))
        canvas.paste(picture, (text_w + (i % 2) * (tile + 10), 20 + (i // 2) * (tile + 10)))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pane", type=Path, help="the text of `tmux capture-pane -p`")
    parser.add_argument("images", type=Path, nargs="*", help="up to four images the session made")
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).parent / "img" / "terminal-chat.png")
    args = parser.parse_args()
    render(args.pane.read_text(encoding="utf-8").splitlines(), args.images, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
