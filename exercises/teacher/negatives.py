"""Teacher's part of exercise negatives: a wider grid of (seed, i), checked by the same
properties."""
from exercises.lib import Fail
from exercises.negatives import seeds, streams


def checks(m, opts):
    def wider():
        grid = [(s, i) for s in range(100) for i in range(60)]
        grid += [(s, 10 ** 6 + s) for s in range(50)]
        seen = {}
        for pair, r in zip(grid, streams(seeds(m, grid))):
            if r in seen:
                raise Fail(f"(seed, i) = {seen[r]} and {pair} get the same random numbers: mix "
                           "seed and i into the seed's low 32 bits, with a separator between them "
                           "(a hash of f'{seed}:{i}')")
            seen[r] = pair
    return [("teacher case: 6,050 pairs (seed up to 99) get their own random numbers", wider)]


def expected(c):
    return {}
