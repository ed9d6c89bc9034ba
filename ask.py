"""Ask a long recording anything: free-form answers, streamed, from a base model or a trained adapter.

    python ask.py --model Qwen/Qwen2-Audio-7B-Instruct --adapter runs/vlat_default/checkpoints/last-adapter \\
        --audio meeting.mp3 "Summarise the second half." "What did they decide about the budget?"
    python ask.py --model .smoke/base-model --audio .smoke/example.flac --interactive

The recording is decoded, encoded and its prompt prefix prefilled once; every question continues from that copy
(vlat/qa.py). The audio RoPE extension comes from the adapter's record of how it was trained (override with
--rope-method etc.); with no adapter, Partial PI beyond the model's 30-s window and vanilla within it. The choice is
printed before the first answer.
"""

from __future__ import annotations

import argparse
import sys

from vlat.cliargs import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ask.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("questions", nargs="*", help="questions about the recording, asked in turn")
    p.add_argument("--model", required=True, help="base model: hub id or local directory")
    p.add_argument("--adapter", help="PEFT adapter directory (train.py's <name>-adapter/)")
    p.add_argument("--audio", required=True, help="the recording: any file soundfile reads (wav, flac, ogg, mp3)")
    p.add_argument("--interactive", action="store_true", help="then keep asking follow-up questions (empty line ends)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("--system-prompt", default=None, help="replaces the chat's system prompt")
    p.add_argument(
        "--rope-method",
        default="auto",
        choices=["auto", "vanilla", "partial_pi", "partial_yarn", "whole_pi", "whole_yarn"],
        help="audio RoPE extension; auto: the adapter's, else partial_pi beyond the window and vanilla within it",
    )
    p.add_argument("--original-audio-seconds", type=float, help="familiar window (default: the adapter's, else 30)")
    p.add_argument("--cutoff-dim", type=int, help="Partial YaRN cutoff (default: the adapter's, else 0)")
    p.add_argument("--rope-temperature", type=float, help="Partial YaRN attention temperature (default: 1.0)")
    p.add_argument("--audio-compression", help="none | pool:K | ltbm:R[:W|:global] (default: the adapter's)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--attn-implementation", default="auto")
    p.add_argument("--allow-other-base", action="store_true", help="use an adapter recorded for another base model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while the recording is prepared")
    return p


def main(argv: list[str] | None = None) -> int:
    from vlat.data.prompts import SYSTEM_PROMPT
    from vlat.errors import BadSampleError, ConfigError
    from vlat.qa import AskSettings, check_audio_file, check_generation

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.questions and not args.interactive:
        parser.error("give at least one question, or --interactive")
    settings = AskSettings(
        rope_method=args.rope_method,
        original_audio_seconds=args.original_audio_seconds,
        cutoff_dim=args.cutoff_dim,
        temperature=args.rope_temperature,
        audio_compression=args.audio_compression,
    )
    try:  # everything that can be checked before the model loads
        settings.validate()
        if args.audio_compression is not None:
            from vlat.audio.compression import AudioCompression

            AudioCompression.parse(args.audio_compression)
        for q in args.questions:
            check_generation(q, args.max_new_tokens, args.temperature, args.top_p)
        check_generation("x", args.max_new_tokens, args.temperature, args.top_p)
        seconds = check_audio_file(args.audio)
    except BadSampleError as e:
        parser.error(f"--audio {e}")
    except (ConfigError, ValueError) as e:
        parser.error(str(e))
    from vlat.qa import LongAudioQA

    try:
        qa = LongAudioQA(
            args.model,
            args.adapter,
            settings,
            system_prompt=args.system_prompt or SYSTEM_PROMPT,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
            allow_other_base=args.allow_other_base,
            progress=not args.no_progress,
        )
        recording = qa.listen(args.audio, args.max_new_tokens)
    except (ConfigError, BadSampleError, OSError) as e:
        print(f"ask.py: error: {e}", file=sys.stderr)
        return 2
    print(f"[ask] {args.audio}: {seconds:.0f} s; {recording.chose}", file=sys.stderr)
    from transformers import TextStreamer

    def answer(question: str) -> None:
        print(f"Q: {question}\nA: ", end="", flush=True)
        streamer = TextStreamer(qa.processor.tokenizer, skip_special_tokens=True)
        qa.ask(
            recording,
            question,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            streamer=streamer,
        )

    failed = False
    for question in [*args.questions, *_typed(args.interactive)]:
        try:
            answer(question)
        except ConfigError as e:  # e.g. a question too long for the room behind the recording: say so, go on
            print(f"\nask.py: error: {e}", file=sys.stderr)
            failed = True
    return 2 if failed else 0


def _typed(interactive: bool):
    """Follow-up questions typed at the ``Q>`` prompt (an empty line or end of input ends)."""
    while interactive:
        try:
            question = input("Q> ").strip()
        except EOFError:
            return
        if not question:
            return
        yield question


if __name__ == "__main__":
    sys.exit(main())
