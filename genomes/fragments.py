"""The fragment library that ships with the package.

Evolved strategies are assembled from these pieces: :mod:`genomes.operators` draws
prompt-slot fragments (role, approach, cautions, answer format), chain step hints and
few-shot exemplars from here when it mutates a strategy or builds a random one (a run
draws only the exemplars that fit its tasks: ``evo.task_pool.TaskPool.exemplar_pool``).
The library is a starting vocabulary, not a limit: an LLM rewrite can put new text
into a slot. Exemplars are not harvested from a run's own completions: the bundled
model's correct answers often rest on wrong steps ("-8 * -1 = -8", answer 8), and an
exemplar teaches its steps.

Rules the entries keep (tests check them): short, distinct, no format markers from
:mod:`genomes.chat_format` (the format rule slot alone names those), and every
exemplar is a correct worked answer in the task families we train on (chain sums,
basic arithmetic, letter counting, spelling backward, word sorting, syllogisms,
counting bits), phrased as reasoning-gym phrases them.
"""

from __future__ import annotations

from types import MappingProxyType

from genomes.strategy import Exemplar

ROLES: tuple[str, ...] = (
    "You are a careful problem solver.",
    "You are a meticulous mathematician.",
    "You are a patient teacher who shows every step.",
    "You are a precise assistant that checks its work.",
    "You are an expert at puzzles and logic.",
    "You are a fast and accurate calculator.",
    "You are a careful reader who never misses a detail.",
    "You solve problems by breaking them into small parts.",
)

APPROACHES: tuple[str, ...] = (
    "Think step by step.",
    "Work through the problem one small step at a time.",
    "Solve the problem in as few steps as you need.",
    "Break the problem into parts and solve each part.",
    "First find what is asked, then work it out.",
    "Write down the given facts before you use them.",
    "Do one operation at a time, from left to right.",
    "Think step by step, like the examples.",
    "Keep each step short and exact.",
)

# "" first: no caution at all is a real option, and often the shortest prompt wins.
CAUTIONS: tuple[str, ...] = (
    "",
    "Do not skip steps.",
    "Copy numbers exactly.",
    "Do not skip steps. Copy numbers exactly.",
    "Watch the signs of negative numbers.",
    "Count carefully; do not guess.",
    "Do not add words or units to the final answer.",
    "Read the question twice before answering.",
)

ANSWER_FORMATS: tuple[str, ...] = (
    "The final answer is a bare value: no units, no words, no working.",
    "Give only the final answer in the answer block.",
    "Write the answer exactly in the form the question asks for.",
    "The answer is a single number, word or list, nothing else.",
    "Answer with the value only.",
    "Give exactly one answer, with no explanation inside it.",
    "If the answer is a list, separate the items with a comma and a space.",
)

# Generic enough to fit arithmetic, counting, string and logic tasks; a chain gene
# holds a few of them in order.
STEP_HINTS: tuple[str, ...] = (
    "Restate what is asked.",
    "List the numbers.",
    "List the given facts.",
    "Add the first two numbers.",
    "Apply the next operation.",
    "Work it out.",
    "Count one item at a time.",
    "Go through the text word by word.",
    "Write the letters one by one.",
    "Reverse the order of the letters.",
    "Compare the first letters.",
    "Put the items in order.",
    "Write the number in binary.",
    "Count the ones.",
    "Combine the two statements.",
    "Decide if the conclusion follows.",
    "Add up the counts.",
    "Write the intermediate result.",
    "State the result.",
    "Check the result.",
)

EXEMPLARS: tuple[Exemplar, ...] = (
    Exemplar(
        question="State the final answer to the following arithmetic problem: 23 - 8 + 15 =",
        steps=("23 - 8 = 15", "15 + 15 = 30"),
        answer="30",
        response="Subtracting 8 from 23 gives 15, and adding 15 gives 30.",
    ),
    Exemplar(
        question="State the final answer to the following arithmetic problem: 5 - 9 - 3 =",
        steps=("5 - 9 = -4", "-4 - 3 = -7"),
        answer="-7",
        response="Going below zero: 5 - 9 is -4, and 3 less is -7.",
    ),
    Exemplar(
        question="Calculate 6 * 4 - 10.",
        steps=("6 * 4 = 24", "24 - 10 = 14"),
        answer="14",
        response="Multiply first, then subtract: 24 - 10 = 14.",
    ),
    Exemplar(
        question="Calculate 48 / 6 + 3.",
        steps=("48 / 6 = 8", "8 + 3 = 11"),
        answer="11",
        response="Divide first, then add: 8 + 3 = 11.",
    ),
    Exemplar(
        question='How many times does the letter "e" appear in the text: "the green tree"?',
        steps=("the: 1", "green: 2", "tree: 2", "1 + 2 + 2 = 5"),
        answer="5",
        response="The letter e appears once in the, twice in green and twice in tree.",
    ),
    Exemplar(
        question="Spell this word backward (example: sun -> nus): planet",
        steps=("The letters are p, l, a, n, e, t", "In reverse order: t, e, n, a, l, p", "Joined: tenalp"),
        answer="tenalp",
        response="Reading planet from the last letter to the first gives tenalp.",
    ),
    Exemplar(
        question=(
            "Sort these words in descending order (using ASCII/Unicode ordering) and return them "
            "as a comma-separated list: river, Apple, moon, banana"
        ),
        steps=(
            "In ASCII, uppercase letters come before lowercase letters",
            "Descending by first letter: r, m, b, then A",
            "river, moon, banana, Apple",
        ),
        answer="river, moon, banana, Apple",
        response="Lowercase words come first in descending order, and Apple, with a capital, comes last.",
    ),
    Exemplar(
        question=(
            "Consider these statements:\n1. All cats are mammals\n2. All mammals are animals\n\n"
            "Does it logically follow that:\nAll cats are animals?\n(Answer Yes or No)"
        ),
        steps=("Every cat is a mammal", "Every mammal is an animal", "So every cat is an animal"),
        answer="Yes",
        response="Both statements chain together, so all cats are animals.",
    ),
    Exemplar(
        question=(
            "Consider these statements:\n1. All dogs are pets\n2. Some pets are birds\n\n"
            "Does it logically follow that:\nSome dogs are birds?\n(Answer Yes or No)"
        ),
        steps=("Every dog is a pet", "Only some pets are birds, and they need not be dogs", "So it does not follow"),
        answer="No",
        response="The pets that are birds may all be pets that are not dogs.",
    ),
    Exemplar(
        question="How many 1 bits are there in the binary representation of the number 13?",
        steps=("13 = 8 + 4 + 1", "In binary: 1101", "Count the ones: 3"),
        answer="3",
        response="13 is 1101 in binary, which has three 1 bits.",
    ),
    Exemplar(
        question="How many 1 bits are there in the binary representation of the number 45?",
        steps=("45 = 32 + 8 + 4 + 1", "In binary: 101101", "1 + 1 + 1 + 1 = 4"),
        answer="4",
        response="45 is 101101 in binary, which has four 1 bits.",
    ),
)

# Slot name -> fragments; the slots that mutation and LLM rewrite may change. The
# format rule is not among them: it defines the output format the parser reads.
SLOT_FRAGMENTS = MappingProxyType({
    "role": ROLES,
    "approach": APPROACHES,
    "cautions": CAUTIONS,
    "answer_format": ANSWER_FORMATS,
})
