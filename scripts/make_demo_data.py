"""Generate the tiny synthetic XSum-style dataset used by ``make demo``.

Every article and summary is invented here from templates and made-up entity
pools; no real news text is used. Rows follow the XSum layout: ``id``,
``document`` (one sentence per line) and ``summary`` (one sentence). Summaries
come from a small fixed set of templates per event type and reuse the
article's key entities, so a tiny model can learn the style within minutes,
while the article's first line is related to but never equal to the summary.

Regenerate with:
    python scripts/make_demo_data.py --output_dir data/demo --seed 0
"""

import argparse
import json
import os
import random
from pathlib import Path

TOWNS = ["Bramholt", "Cresswick", "Dunmere", "Eastlow", "Farnby", "Glenhaven", "Harrowfield",
         "Inverlane", "Kestlebury", "Lowmarsh", "Marrowgate", "Northwyn", "Oakridge", "Pellham",
         "Quarrydown", "Redbourne", "Saltmere", "Thornwick", "Upperfold", "Westerby"]
FIRST = ["Alys", "Bryn", "Carys", "Dafydd", "Elin", "Fergus", "Greta", "Hamish", "Isla", "Jonas",
         "Kerys", "Lachlan", "Morven", "Niall", "Orla", "Perrin", "Rhona", "Soren", "Tamsin", "Ewan"]
LAST = ["Ashcombe", "Belford", "Corrin", "Dunlow", "Elphick", "Fairweather", "Gorring", "Halloway",
        "Ingleby", "Jessop", "Kettering", "Lomax", "Merriwether", "Nettleford", "Orwin", "Pryce",
        "Quilter", "Rowntree", "Stroud", "Tolley"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
COMPANIES = ["Velmora", "Tarnex", "Brightwell", "Okanda", "Fenwright", "Calloway", "Stanmoor"]

# Per event type: slot generator, summary templates (the learnable target),
# lead templates (first line; related to the event but never the summary),
# key lines (always included, so every entity a summary names appears in the
# document) and optional body lines.  Templates may use the common slots
# ({town}, {person}, {day}, ...) plus those returned by the slot generator.
EVENTS = {
    "council_vote": {
        "slots": lambda r: {"topic": r.choice(["a new bypass", "higher parking charges", "a cycle lane scheme",
                                              "a housing estate", "a town centre car park"]),
                            "num": r.randint(12, 40)},
        "summary": ["Councillors in {town} have voted to approve plans for {topic} despite objections from residents.",
                    "Plans for {topic} in {town} have been approved by {num} councillors after a lengthy debate.",
                    "{town} council has backed {topic} in a vote, {role_title} {person} has confirmed."],
        "lead": ["A meeting of {town} council on {day} ended with a decision on {topic}.",
                 "Residents of {town} packed the council chamber on {day} to hear the debate."],
        "key": ["The proposal for {topic} was supported by {num} members of the council.",
                "\"This is the right decision for the town,\" said {role_title} {person}."],
        "body": ["Opponents said {topic} would damage the character of {town}.",
                 "A petition against the scheme had gathered more than {big} signatures.",
                 "The vote took place after more than three hours of heated debate.",
                 "Work on the project is expected to begin next spring."]},
    "football_match": {
        "slots": lambda r: {"opponent": r.choice(TOWNS) + " Rovers", "goals": r.randint(2, 5),
                            "against": r.randint(0, 1), "minute": r.randint(60, 90)},
        "summary": ["{town} United beat {opponent} {goals}-{against} thanks to a late goal from {person}.",
                    "{person} scored in the {minute}th minute as {town} United defeated {opponent} {goals}-{against}.",
                    "{town} United moved up the table with a {goals}-{against} win over {opponent}."],
        "lead": ["{town} United faced {opponent} in front of a home crowd on {day}.",
                 "It was a dramatic afternoon for supporters of {town} United on {day}."],
        "key": ["The home side ran out {goals}-{against} winners against {opponent}.",
                "{person} found the net for the hosts in the {minute}th minute."],
        "body": ["{opponent} had started the game brightly but faded after the break.",
                 "\"The players showed great character today,\" said manager {person2}.",
                 "A crowd of {big} watched the match.",
                 "The result leaves {opponent} near the bottom of the league."]},
    "factory_opening": {
        "slots": lambda r: {"company": r.choice(COMPANIES) + r.choice([" Foods", " Motors", " Plastics", " Textiles"]),
                            "jobs": r.choice([50, 80, 120, 150, 200, 350, 400])},
        "summary": ["A new {company} factory has opened in {town}, creating {jobs} jobs for the area.",
                    "{company} has opened a factory in {town} which will employ {jobs} people.",
                    "About {jobs} jobs have been created after {company} opened a new site in {town}."],
        "lead": ["The doors of a large new building in {town} were opened on {day}.",
                 "Business leaders gathered in {town} on {day} to mark a major investment."],
        "key": ["{company} said the new factory would employ {jobs} people when fully running.",
                "\"This is a proud day for {town},\" said chief executive {person}."],
        "body": ["The building covers more than {big} square metres.",
                 "Local colleges will offer training courses linked to the new site.",
                 "The company first announced its plans {num} months ago."]},
    "storm_damage": {
        "slots": lambda r: {"storm": "Storm " + r.choice(FIRST), "homes": r.randint(20, 900)},
        "summary": ["{storm} has damaged {homes} homes in {town}, leaving families without power.",
                    "Hundreds of people in {town} are clearing up after {storm} hit {homes} homes.",
                    "Emergency crews are working in {town} after {storm} damaged {homes} homes."],
        "lead": ["Strong winds and heavy rain swept across {town} overnight on {day}.",
                 "Residents in {town} woke on {day} to scenes of destruction."],
        "key": ["{storm} brought down power lines and damaged about {homes} homes in the area.",
                "\"We have never seen anything like it,\" said resident {person}."],
        "body": ["Fallen trees blocked several roads into {town}.",
                 "The weather service said gusts reached {num} miles per hour.",
                 "A rest centre has been opened at the local leisure centre."]},
    "hospital_funding": {
        "slots": lambda r: {"amount": r.randint(2, 60), "unit": r.choice(["cancer unit", "maternity ward",
                                                                           "children's ward", "emergency department"])},
        "summary": ["{town} General Hospital is to receive {amount} million pounds to build a new {unit}.",
                    "A new {unit} will be built at {town} General Hospital with {amount} million pounds of funding.",
                    "Funding of {amount} million pounds has been approved for a {unit} in {town}."],
        "lead": ["Health bosses in {town} have welcomed an announcement made on {day}.",
                 "Patients at {town} General Hospital are set to benefit from new investment."],
        "key": ["The government has agreed to provide {amount} million pounds for a new {unit} at the hospital.",
                "\"This will transform care for local families,\" said {role_title} {person}."],
        "body": ["The {unit} is expected to treat more than {big} patients a year.",
                 "Staff had campaigned for better facilities for several years.",
                 "Building work is due to be completed within {num} months."]},
    "school_inspection": {
        "slots": lambda r: {"school": r.choice(LAST) + " " + r.choice(["Primary School", "Academy", "High School"]),
                            "rating": r.choice(["outstanding", "good", "inadequate", "requires improvement"])},
        "summary": ["Inspectors have rated {school} in {town} as {rating} following a visit this term.",
                    "{school} in {town} has been judged {rating} in its latest inspection report.",
                    "A report has rated {school} in {town} as {rating}, head teacher {person} said."],
        "lead": ["A report on {school} in {town} was published on {day}.",
                 "Parents in {town} have been reading the findings of a new report on their local school."],
        "key": ["Inspectors judged {school} to be {rating} overall.",
                "\"We are proud of our pupils and staff,\" said head teacher {person}."],
        "body": ["Inspectors spent two days at the school and observed {num} lessons.",
                 "The school has about {big} pupils on its roll.",
                 "Inspectors said leaders had a clear plan for the future."]},
    "court_sentence": {
        "slots": lambda r: {"crime": r.choice(["burglary", "fraud", "arson", "dangerous driving"]),
                            "years": r.randint(2, 12), "age": r.randint(19, 64)},
        "summary": ["A {age}-year-old man from {town} has been jailed for {years} years for {crime}.",
                    "{person} from {town} has been sentenced to {years} years in prison for {crime}.",
                    "A man who admitted {crime} in {town} has been jailed for {years} years."],
        "lead": ["A case at {town} Crown Court concluded on {day}.",
                 "A judge at {town} Crown Court has spoken of the harm caused to victims."],
        "key": ["{person}, aged {age}, had admitted {crime} and was given a sentence of {years} years."],
        "body": ["The court heard the offences took place over {num} months.",
                 "\"The impact on the victims has been severe,\" said Judge {person2}.",
                 "Police said they hoped the sentence would reassure the community."]},
    "scientific_discovery": {
        "slots": lambda r: {"find": r.choice(["a new species of beetle", "a new species of frog",
                                             "an ancient coin hoard", "a rare fossil"]),
                            "age_years": r.choice([200, 1000, 2000, 5000, 10000])},
        "summary": ["Scientists from the University of {town} have discovered {find} in nearby woodland.",
                    "Researchers led by {person} at the University of {town} say they have found {find}.",
                    "{find} has been identified by a team from the University of {town}."],
        "lead": ["A team of researchers in {town} has announced an unexpected result.",
                 "Scientists in {town} say a field survey on {day} produced a surprise."],
        "key": ["A team led by {person} from the University of {town} identified {find} during fieldwork.",
                "\"We could hardly believe what we were seeing,\" said {person}."],
        "body": ["The team believes the find could be {age_years} years old.",
                 "The research was carried out over {num} months.",
                 "Samples have been sent to other laboratories for further tests."]},
}

# Event-agnostic filler lines, shuffled into the body so that documents are
# longer and noisier than the summary target.
FILLER = ["The announcement was made on {day} afternoon and was quickly discussed across the district.",
          "Local people have been sharing their views on social media, with opinion sharply divided.",
          "{town} has a population of about {pop} people and has grown steadily over the past decade.",
          "A spokesperson for the local authority said more details would be published in the coming weeks.",
          "{resident}, who has lived in {town} for many years, said the community had been waiting for news.",
          "The story has attracted interest from across the region, with visitors arriving to see for themselves.",
          "Further updates are expected later this week once officials have had time to review the details.",
          "Similar events have been reported in neighbouring towns in recent years, according to local records.",
          "Officials said they would continue to monitor the situation closely and keep residents informed.",
          "Many residents said they were surprised by the speed of events and wanted more information.",
          "Local business owners said they hoped the news would bring more people into the town centre.",
          "A public meeting is planned at the community hall in {town} next month to answer questions."]


def _capitalise(text: str) -> str:
    """Uppercase the first character only (str.capitalize would lowercase names)."""
    return text[:1].upper() + text[1:]


def make_row(rng: random.Random, row_id: str) -> dict:
    """Build one synthetic article/summary pair.

    Args:
        rng: Seeded random generator (the only source of randomness).
        row_id: Identifier stored in the ``id`` field.

    Returns:
        A dict with ``id``, ``document`` and ``summary`` keys.
    """
    event = EVENTS[rng.choice(sorted(EVENTS))]
    slots = {"town": rng.choice(TOWNS), "day": rng.choice(DAYS),
             "person": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
             "person2": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
             "resident": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
             "role_title": rng.choice(["council leader", "spokesperson", "chairman", "director"]),
             "num": rng.randint(3, 90), "big": rng.choice([500, 1200, 3000, 8000, 15000]),
             "pop": rng.choice([9000, 14000, 22000, 40000, 65000])}
    slots.update(event["slots"](rng))

    # As in news, the lead comes first and the main fact second; the other key
    # lines, optional body lines and filler are shuffled, 7-12 lines in total.
    extras = event["key"][1:] + rng.sample(event["body"], k=rng.randint(1, len(event["body"])))
    extras += rng.sample(FILLER, k=rng.randint(max(1, 5 - len(extras)), 10 - len(extras)))
    rng.shuffle(extras)
    lines = [rng.choice(event["lead"]), event["key"][0]] + extras
    document = "\n".join(_capitalise(line.format(**slots)) for line in lines)
    summary = _capitalise(rng.choice(event["summary"]).format(**slots))
    return {"id": row_id, "document": document, "summary": summary}


def write_jsonl(rows: list[dict], path: Path) -> None:
    """Write rows as JSONL atomically (temp file, then os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(tmp, path)


def main() -> None:
    """Parse arguments and write the train/validation/test splits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=Path("data/demo"), help="where to write the JSONL files")
    parser.add_argument("--seed", type=int, default=0, help="random seed (output is a pure function of it)")
    parser.add_argument("--train", type=int, default=600, help="number of training rows")
    parser.add_argument("--validation", type=int, default=60, help="number of validation rows")
    parser.add_argument("--test", type=int, default=60, help="number of test rows")
    args = parser.parse_args()

    # One generator for all splits, consumed in a fixed order, so the output
    # depends only on the seed and the split sizes.
    rng = random.Random(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        count = getattr(args, split)
        rows = [make_row(rng, f"demo-{split}-{i:05d}") for i in range(1, count + 1)]
        path = args.output_dir / f"{split}.jsonl"
        write_jsonl(rows, path)
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
