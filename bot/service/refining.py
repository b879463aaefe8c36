"""Prompt refinement in the service: off the GPU path, safety on both texts, both kept.

``refine_request`` runs before the job is charged and stored: the user's own prompt is checked
first (a refused prompt never reaches the model), then the refiner (generation.prompts.refine, its own
thread, time limit, cache) rewrites it, then the refined text goes through the same prompt
checker. When refinement fails, times out, or its text is refused, the user's own prompt is used
and the note says so. The request keeps both: ``prompt`` (what the model drew) and
``original_prompt`` (what the user typed); both go into the job row, history and PNG metadata.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest

__all__ = ["REFUSED_NOTE", "refine_checked", "refine_request"]

REFUSED_NOTE = "The refined prompt did not pass the safety check; your own prompt was used."


async def refine_request(ctx: Any, who: Any, request: GenerationRequest,
                         target: dict[str, Any] | None) -> tuple[GenerationRequest, tuple[str, ...]]:
    """``request`` with its prompt refined (or unchanged), and the notes for the user."""
    refiner = getattr(ctx, "refiner", None)
    if refiner is None:
        raise InvalidRequest("refine", "Prompt refinement is not set up on this bot (refine.model).")
    await ctx.moderation.check_prompt(who, request.prompt, request.negative_prompt, target)
    # the refined text meets the rules typed text meets here: the server's allow list included
    request, note = await refine_checked(refiner, await ctx.moderation.checker_for(target), request)
    return request, (note,)


async def refine_checked(refiner: Any, checker: Any,
                         request: GenerationRequest) -> tuple[GenerationRequest, str]:
    """``request`` with the prompt ``refiner`` writes when ``checker`` allows it (the request
    unchanged otherwise), and the note saying which (the service and ``imagine-bot generate``)."""
    outcome = await refiner.refine(request.prompt)
    if not outcome.refined:
        return request, outcome.note or "Refinement failed; your own prompt was used."
    if not checker.check(outcome.text, request.negative_prompt).allowed:
        return request, REFUSED_NOTE
    try:
        refined = replace(request, prompt=outcome.text, original_prompt=request.prompt)
    except InvalidRequest:
        return request, "Refinement gave an unusable prompt; your own prompt was used."
    return refined, f"Refined prompt: {outcome.text}"
