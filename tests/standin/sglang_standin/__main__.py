"""`python -m sglang_standin ARGV...`: the SGLang stand-in's entry point (a test double)."""

from sglang_standin.server import main

main()
