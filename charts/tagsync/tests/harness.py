"""The runner the chart's test scripts share: every `test_*` function of a
module, one line each, a closing "N passed, N failed" line, and the exit
status."""

import traceback


def run_tests(namespace, label):
    tests = [(n, f) for n, f in sorted(namespace.items()) if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok     {name}")
            passed += 1
        except Exception:
            print(f"FAILED {name}")
            traceback.print_exc()
            failed += 1
    print(f"{label}{passed} passed, {failed} failed")
    return 1 if failed else 0
