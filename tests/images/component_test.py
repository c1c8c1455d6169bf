#!/usr/bin/env python3
"""image_component_test: tools/grove-image's Image Builder component document parser.

usage: component_test.py SOURCE_DIR

The parser is Python, so instead of a libFuzzer target: a table of bad documents, each
refused with the field and the reason, and a bounded mutation run (seeded, so a failure
reproduces) over the documents in tests/images/corpus/ in which every input either
parses or is refused with ImageError, never another exception.
"""

import importlib.machinery
import importlib.util
import os
import random
import sys
import unittest

SRC = os.path.abspath(sys.argv[1])
loader = importlib.machinery.SourceFileLoader("grove_image", os.path.join(SRC, "tools/grove-image"))
spec = importlib.util.spec_from_loader("grove_image", loader)
gi = importlib.util.module_from_spec(spec)
loader.exec_module(gi)

CORPUS = os.path.join(SRC, "tests/images/corpus")

GOOD = """name: good-one
description: fine
schemaVersion: 1.0
phases:
  - name: build
    steps:
      - name: S1
        action: ExecuteBash
        onFailure: Continue
        timeoutSeconds: 10
        maxAttempts: 3
        inputs:
          commands: [echo a, echo b]
  - name: test
    steps:
      - name: S1
        action: ExecuteBash
        inputs: {commands: ["true"]}
"""

STEP = "phases:\n  - name: build\n    steps:\n      - name: S\n        action: ExecuteBash\n"


def doc(extra_top="", step_extra="        inputs: {commands: [x]}\n"):
    return "name: n-1\nschemaVersion: 1.0\n" + extra_top + STEP + step_extra


BAD = [
    ("", "document: must be a map"),
    ("[1, 2]", "document: must be a map"),
    ("name: [unclosed", "document: not YAML"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("{1: x}", "keys must be strings"),
    (doc(extra_top="bogus: 1\n"), "bogus: unknown key"),
    (doc(extra_top="parameters: []\n"), "parameters: not supported"),
    (doc().replace("name: n-1", "name: x"), "name: required, must match"),
    (doc().replace("name: n-1", "name: 'bad/name'"), "name: required, must match"),
    (doc().replace("name: n-1\n", ""), "name: required"),
    (doc().replace("schemaVersion: 1.0", "schemaVersion: 2.0"), "schemaVersion: must be 1.0"),
    (doc().replace("schemaVersion: 1.0\n", ""), "schemaVersion: must be 1.0"),
    ("name: n-1\nschemaVersion: 1.0\n", "phases: required"),
    ("name: n-1\nschemaVersion: 1.0\nphases: []\n", "phases: required"),
    ("name: n-1\nschemaVersion: 1.0\nphases: [3]\n", "phases[0]: must be a map"),
    ("name: n-1\nschemaVersion: 1.0\nphases: [{name: build, steps: [], x: 1}]\n",
     "phases[0].x: unknown key"),
    ("name: n-1\nschemaVersion: 1.0\nphases: [{name: deploy, steps: [{}]}]\n",
     "phases[0].name: must be one of build, validate, test"),
    ("name: n-1\nschemaVersion: 1.0\nphases: [{name: build}]\n", "phases[0].steps: required"),
    ("name: n-1\nschemaVersion: 1.0\nphases: [{name: build, steps: [x]}]\n",
     "build.steps[0]: must be a map"),
    (doc(step_extra="        inputs: {commands: [x]}\n        when: now\n"), "build.steps[0].when: unknown key"),
    (doc().replace("name: S\n", "name: 'S S'\n"), "build.steps[0].name: required, must match"),
    (doc().replace("action: ExecuteBash", "action: ExecuteBinary"),
     "build.S.action: unsupported action 'ExecuteBinary' (supported: ExecuteBash)"),
    (doc().replace("        action: ExecuteBash\n", ""), "build.S.action: unsupported action None"),
    (doc(step_extra="        inputs: {commands: [x]}\n        onFailure: Retry\n"),
     "build.S.onFailure: must be one of Abort, Continue, Ignore"),
    (doc(step_extra="        inputs: {commands: [x]}\n        timeoutSeconds: 0\n"),
     "build.S.timeoutSeconds: must be an integer 1-86400"),
    (doc(step_extra="        inputs: {commands: [x]}\n        timeoutSeconds: 1.5\n"),
     "build.S.timeoutSeconds: must be an integer"),
    (doc(step_extra="        inputs: {commands: [x]}\n        timeoutSeconds: true\n"),
     "build.S.timeoutSeconds: must be an integer"),
    (doc(step_extra="        inputs: {commands: [x]}\n        maxAttempts: 11\n"),
     "build.S.maxAttempts: must be an integer 1-10"),
    (doc(step_extra="        inputs: {commands: [x]}\n        maxAttempts: '2'\n"),
     "build.S.maxAttempts: must be an integer"),
    (doc(step_extra=""), "build.S.inputs: must be a map with exactly the key commands"),
    (doc(step_extra="        inputs: {commands: [x], path: y}\n"), "build.S.inputs: must be a map"),
    (doc(step_extra="        inputs: {commands: []}\n"), "build.S.inputs.commands: must be a non-empty list"),
    (doc(step_extra="        inputs: {commands: echo}\n"), "build.S.inputs.commands: must be a non-empty list"),
    (doc(step_extra="        inputs: {commands: [1]}\n"), "build.S.inputs.commands[0]: must be a string"),
    (doc(step_extra='        inputs: {commands: ["a\\0b"]}\n'), "build.S.inputs.commands[0]: must be a string without NUL"),
    (GOOD.replace("  - name: test\n", "  - name: build\n"), "phase 'build' appears twice"),
    (doc(step_extra="        inputs: {commands: [x]}\n      - name: S\n        action: ExecuteBash\n"
                    "        inputs: {commands: [y]}\n"), "step 'S' appears twice in phase build"),
    (b"name: \xff\xfe\n", "document: not UTF-8"),
    ("x" * 16001, "document: more than 16000 bytes"),
    ("[" * 5000 + "]" * 5000, "document:"),
    ("a: &a [*a]\n", "a: unknown key"),
    (doc(step_extra="        inputs: {commands: &c [*c]}\n"), "build.S.inputs.commands[0]: must be a string"),
    (doc(step_extra="        inputs: {commands: [!!python/object/apply:os.system [id]]}\n"),
     "document: not YAML"),
]


class ComponentTest(unittest.TestCase):
    def test_good_document(self):
        c = gi.parse_component(GOOD, "good.yaml")
        self.assertEqual(c["name"], "good-one")
        self.assertEqual([p for p, _ in c["phases"]], ["build", "test"])
        s = c["phases"][0][1][0]
        self.assertEqual((s["name"], s["on_failure"], s["timeout"], s["attempts"], s["commands"]),
                         ("S1", "Continue", 10, 3, ["echo a", "echo b"]))
        d = c["phases"][1][1][0]
        self.assertEqual((d["on_failure"], d["timeout"], d["attempts"]), ("Abort", 7200, 1))

    def test_phases_run_in_image_builder_order(self):
        text = GOOD.replace("name: build", "name: validate")
        text = text.replace("  - name: test\n", "  - name: build\n")
        c = gi.parse_component(text, "o.yaml")
        self.assertEqual([p for p, _ in c["phases"]], ["build", "validate"])

    def test_bad_documents(self):
        for text, expected in BAD:
            with self.subTest(text=text[:60], expected=expected):
                with self.assertRaises(gi.ImageError) as cm:
                    gi.parse_component(text, "doc.yaml")
                self.assertIn(expected, str(cm.exception))
                self.assertTrue(str(cm.exception).startswith("doc.yaml: "))

    def test_shipped_components_parse(self):
        d = os.path.join(SRC, "configs/images/components")
        for f in sorted(os.listdir(d)):
            gi.load_component(os.path.join(d, f))

    def test_mutations_parse_or_are_refused(self):
        seeds = [GOOD.encode()] + [open(os.path.join(CORPUS, f), "rb").read()
                                   for f in sorted(os.listdir(CORPUS))]
        rng = random.Random(18)
        tokens = [b":", b"-", b"[", b"]", b"{", b"}", b"\n", b" ", b"&a", b"*a", b"!!int",
                  b"!!python/object:os.system", b"'", b'"', b"\x00", b"\xff", b"1.0", b"null",
                  b"maxAttempts: ", b"timeoutSeconds: -1", b"commands:", b"<<: *a"]
        accepted = refused = 0
        for i in range(3000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 8)):
                op = rng.randrange(4)
                pos = rng.randrange(len(data) + 1)
                if op == 0 and data:
                    del data[pos:pos + rng.randint(1, 16)]
                elif op == 1:
                    data[pos:pos] = rng.choice(tokens)
                elif op == 2 and data:
                    data[min(pos, len(data) - 1)] = rng.randrange(256)
                else:
                    chunk = data[rng.randrange(len(data) + 1):][:64]
                    data[pos:pos] = chunk
            try:
                c = gi.parse_component(bytes(data), f"mutant-{i}")
                # What parses is what the runner needs, every field typed.
                for _, steps in c["phases"]:
                    for s in steps:
                        self.assertTrue(all(isinstance(x, str) for x in s["commands"]))
                        self.assertIsInstance(s["timeout"], int)
                accepted += 1
            except gi.ImageError as e:
                self.assertTrue(str(e).startswith(f"mutant-{i}: "), str(e))
                refused += 1
        print(f"mutations: {accepted} accepted, {refused} refused", file=sys.stderr)
        self.assertGreater(refused, 0)
        self.assertGreater(accepted, 0)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
