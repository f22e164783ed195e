"""The fixed texts of ``workloads.py``: filler words, the function ``repeats`` edits and the passage it copies."""

from __future__ import annotations

__all__ = ["FUNCTION", "PASSAGE", "RENAMES", "TOPICS", "WORDS"]

WORDS = (
    "the a of and to in is it that was for on are with as his they be at one have this from by hot word but what "
    "some we can out other were all there when up use your how said an each she which do their time if will way "
    "about many then them write would like so these her long make thing see him two has look more day could go "
    "come did number sound no most people my over know water than call first who may down side been now find "
    "river stone green quick house light music paper cloud horse garden window morning winter"
).split()

FUNCTION = '''def summarize_orders(orders, customers, tax_rate=0.2):
    """Totals per customer, with the largest order and the tax due."""
    report = {}
    for order in orders:
        customer = customers.get(order["customer_id"])
        if customer is None:
            continue
        entry = report.setdefault(customer["name"], {"total": 0.0, "count": 0, "largest": 0.0})
        total = 0.0
        for line in order["lines"]:
            price = line["price"] * line["quantity"]
            if line.get("discount"):
                price -= price * line["discount"]
            total += price
        entry["total"] += total
        entry["count"] += 1
        if total > entry["largest"]:
            entry["largest"] = total
    for name, entry in report.items():
        entry["tax"] = round(entry["total"] * tax_rate, 2)
        entry["average"] = round(entry["total"] / entry["count"], 2)
        entry["total"] = round(entry["total"], 2)
    ranked = sorted(report.items(), key=lambda item: item[1]["total"], reverse=True)
    lines = []
    for position, (name, entry) in enumerate(ranked, start=1):
        lines.append(
            f"{position:>3}. {name:<20} {entry['count']:>4} orders "
            f"{entry['total']:>10.2f} total {entry['average']:>8.2f} average "
            f"{entry['largest']:>10.2f} largest {entry['tax']:>8.2f} tax"
        )
    if not lines:
        return "No orders."
    header = f"{'#':>3}  {'customer':<20} {'n':>4}        {'total':>10}"
    grand = sum(entry["total"] for _, entry in ranked)
    tax = sum(entry["tax"] for _, entry in ranked)
    lines.insert(0, header)
    lines.append(f"     {'all customers':<20} {len(orders):>4} orders {grand:>10.2f} total")
    lines.append(f"     tax due at {tax_rate:.0%}: {tax:.2f}")
    return "\\n".join(lines)
'''
RENAMES = (("total", "amount"), ("entry", "row"), ("report", "totals"), ("lines", "rows"), ("price", "cost"))
TOPICS = ("a lighthouse keeper", "a lost dog", "a city under the sea", "a clockmaker", "a long winter", "a comet")
PASSAGE = (  # about 425 tokens, none repeated: a 135M model copies prose, where it drifts from code
    "The lighthouse stood at the end of a long stone pier, where the harbour wall bent towards the open sea. "
    "Every evening the keeper climbed the ninety steps of the tower, trimmed the wick, polished the great "
    "lens and wound the clockwork that turned it. Ships far out at sea counted the flashes to know which "
    "coast they were passing, and fishermen coming home late looked for the beam before they looked for the "
    "stars.\n"
    "The keeper had lived there for eleven years. He kept a logbook on the table by the window, and in it he "
    "wrote the weather, the ships he saw, the oil he burned and the names of the few visitors who walked out "
    "along the pier. Most of the entries were short. Wind from the west, light rain, two trawlers and a cargo"
    " ship before midnight. Some were longer, when a storm had kept him awake or when a boat had come in with"
    " a broken mast.\n"
    "In winter the waves broke over the pier and threw spray as high as the gallery. On those nights the "
    "keeper tied a rope from the door of his cottage to the foot of the tower, so that he could find his way "
    "in the dark without being pulled into the water. He carried a lantern in one hand and held the rope with"
    " the other, counting his steps until his fingers touched the cold iron of the door.\n"
    "Once a year an inspector came from the city on the morning train. He checked the lens for scratches, "
    "tested the clockwork with a stopwatch, read the logbook from the first page to the last and drank two "
    "cups of tea in the kitchen. Then he signed the book, shook the keeper's hand and walked back along the "
    "pier to catch the afternoon train home.\n"
    "The summer evenings were the keeper's favourite. The sea was calm, the light lingered until almost ten, "
    "and children from the town came out to fish from the end of the pier. He would lean on the rail of the "
    "gallery and watch their lines glint in the low sun, and when the first star appeared he would go inside,"
    " climb the steps and light the lamp again."
)
