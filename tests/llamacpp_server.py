"""Starts llama-cpp-python's OpenAI-compatible server, with weight repacking off.

Repacked weights crashed multi-token batches on this workplace's AMX-capable CPU (see
runners/llamacpp.py); the server offers no flag for it, so this launcher changes llama.cpp's
default model parameters before handing over to the server's own entry point, unchanged.
"""

import llama_cpp
import llama_cpp.llama

_defaults = llama_cpp.llama_model_default_params


def _without_repacking():  # type: ignore[no-untyped-def]
    params = _defaults()
    params.use_extra_bufts = False
    return params


llama_cpp.llama.llama_cpp.llama_model_default_params = _without_repacking  # type: ignore[assignment]

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()
