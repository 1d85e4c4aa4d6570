#!/usr/bin/env python3
"""Writes detectors.jsonl: labelled texts for the built-in sensitivity detectors.

Each line is {"text": ..., "findings": [{"type", "start", "end"}]} with byte offsets (the texts
are ASCII). Positives plant generated values (valid checksums, issued-looking ranges) in varied
sentences; negatives are look-alikes the detectors must not report: versions, tracking and order
numbers, hashes, UUIDs, dates, ISBNs, coordinates, bad checksums and documentation examples.
Deterministic: re-running gives the same file.
"""

import base64
import json
import os
import random
import string

rng = random.Random(20240601)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
URLSAFE = ALNUM + "-_"


def rand(chars, n, end_alnum=False):
    s = "".join(rng.choice(chars) for _ in range(n))
    if end_alnum:
        s = s[:-1] + rng.choice(ALNUM)
    return s


def digits(n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def luhn_complete(prefix, length):
    body = prefix + digits(length - len(prefix) - 1)
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError


def luhn_ok(number):
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ---- value generators: each returns (value, type) or a list of (text, findings) pieces ----

FIRST = ["alice", "bob", "carol", "dmitri", "eve", "farah", "gustav", "hana", "ivan", "jun",
         "kwame", "lucia", "mateo", "nora", "oskar", "priya", "quinn", "rosa", "sven", "tariq"]
LAST = ["smith", "garcia", "mueller", "tanaka", "okafor", "rossi", "novak", "chen", "dubois",
        "silva", "kowalski", "ivanova", "haddad", "larsen", "obrien"]
DOMAINS = ["acme-corp.com", "mail.globex.io", "initech.co.uk", "umbrella.de", "hooli.xyz",
           "stark-industries.net", "wayne.enterprises", "posteo.de", "gmail.com", "outlook.fr",
           "uni-heidelberg.de", "cs.stanford.edu", "dept.gov.au", "proton.me"]


def email():
    f, l = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{l}", f"{f}{rng.randint(1, 99)}", f"{f[0]}{l}", f"{f}_{l}",
                        f"{f}+{rng.choice(['news', 'work', 'x'])}", f"{l}.{f}-{digits(2)}"])
    if rng.random() < 0.15:
        local = local.capitalize()
    return f"{local}@{rng.choice(DOMAINS)}"


def nanp_number():
    area = str(rng.randint(2, 9)) + digits(2)
    exchange = str(rng.randint(2, 9)) + digits(2)
    line = digits(4)
    if exchange == "555" and line.startswith("01"):
        line = "2" + line[1:]
    return area, exchange, line


def phone():
    kind = rng.randrange(14)
    a, e, l = nanp_number()
    if kind == 0:
        return f"+1{a}{e}{l}"
    if kind == 1:
        return f"+1 {a} {e} {l}"
    if kind == 2:
        return f"+1-{a}-{e}-{l}"
    if kind == 3:
        return f"({a}) {e}-{l}"
    if kind == 4:
        return rng.choice([f"{a}-{e}-{l}", f"{a}.{e}.{l}", f"{a} {e} {l}"])
    if kind == 5:
        return f"1-{a}-{e}-{l}"
    if kind == 6:
        return rng.choice([f"+44 20 {rng.randint(3, 8)}{digits(3)} {digits(4)}",
                           f"+44 7{digits(3)} {digits(6)}"])
    if kind == 7:
        return rng.choice([f"+49 30 {digits(8)}", f"+49 (0)89 {digits(7)}",
                           f"+49 151 {digits(8)}"])
    if kind == 8:
        return f"+33 {rng.randint(1, 7)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}"
    if kind == 9:
        return rng.choice([f"+81 3-{digits(4)}-{digits(4)}", f"+61 2 {digits(4)} {digits(4)}",
                           f"+91 9{digits(4)} {digits(5)}", f"+86 138 {digits(4)} {digits(4)}",
                           f"+34 6{digits(2)} {digits(3)} {digits(3)}",
                           f"+39 06 {digits(4)} {digits(4)}"])
    if kind == 10:
        return rng.choice([f"020 {rng.randint(3, 8)}{digits(3)} {digits(4)}",
                           f"07{rng.randint(1, 9)}{digits(2)} {digits(6)}"])
    if kind == 11:
        sep = rng.choice([" ", "."])
        return sep.join([f"0{rng.randint(1, 7)}"] + [digits(2) for _ in range(4)])
    if kind == 12:
        return rng.choice([f"030 {digits(8)}", f"(030) {digits(7)}", f"089/{digits(7)}"])
    return f"+{rng.choice(['1', '44', '49', '33', '61'])}{digits(10)}"


CARD_PREFIXES = [("4", 16), ("4", 16), ("51", 16), ("53", 16), ("55", 16), ("2221", 16),
                 ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16),
                 ("36", 14), ("4", 13), ("62", 16)]


def card():
    prefix, length = rng.choice(CARD_PREFIXES)
    number = luhn_complete(prefix, length)
    style = rng.randrange(3)
    if style == 0 or length not in (15, 16):
        return number
    sep = " " if style == 1 else "-"
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


IBAN_FORMATS = {"DE": "8n10n", "GB": "4a14n", "FR": "5n5n11c2n", "NL": "4a10n", "ES": "20n",
                "IT": "1a10n12c", "CH": "5n12c", "BE": "12n", "AT": "16n", "PL": "24n",
                "SE": "20n", "IE": "4a14n", "PT": "21n", "DK": "14n", "NO": "11n"}


def bban(spec):
    out, num = "", ""
    for ch in spec:
        if ch.isdigit():
            num += ch
            continue
        n = int(num)
        num = ""
        chars = {"n": string.digits, "a": string.ascii_uppercase, "c": UPPER_DIGITS}[ch]
        out += rand(chars, n)
    return out


def iban_check(country, body):
    rearranged = body + country + "00"
    value = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{98 - value % 97:02d}"


def iban(valid=True):
    country = rng.choice(sorted(IBAN_FORMATS))
    body = bban(IBAN_FORMATS[country])
    check = iban_check(country, body)
    if not valid:
        bad = (int(check) + rng.randint(1, 96)) % 97
        check = f"{bad + 2 if bad < 2 else bad:02d}"
    compact = country + check + body
    if rng.random() < 0.5:
        return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
    return compact


def ssn_parts():
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


def ipv4():
    while True:
        octets = [rng.choice([10, 172, 192, rng.randint(1, 223)]), rng.randint(0, 255),
                  rng.randint(0, 255), rng.randint(1, 254)]
        value = ".".join(map(str, octets))
        if not value.startswith(("192.0.2.", "198.51.100.", "203.0.113.")):
            return value


def ipv6():
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(8)]
    groups[0] = rng.choice(["2a01", "2607", "fe80", "2001", "fd12", "2a00"])
    if groups[0] == "2001" and groups[1] == "db8":
        groups[1] = "4860"
    style = rng.randrange(4)
    if style == 0:
        return ":".join(groups)
    if style == 1:
        return ":".join(g.zfill(4) for g in groups)
    if style == 2:
        return ":".join(groups[:3]) + "::" + ":".join(groups[6:])
    return f"::ffff:{ipv4()}"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret():
    kind = rng.randrange(16)
    if kind == 0:
        return rng.choice(["AKIA", "ASIA"]) + rand(UPPER_DIGITS, 16), "secret.aws_access_key"
    if kind == 1:
        return f"gh{rng.choice('pous')}_" + rand(ALNUM, 36), "secret.github_token"
    if kind == 2:
        return "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59), "secret.github_token"
    if kind == 3:
        return (f"xox{rng.choice('bpa')}-{digits(12)}-{digits(13)}-{rand(ALNUM, 24)}",
                "secret.slack_token")
    if kind == 4:
        return (f"https://hooks.slack.com/services/T{rand(UPPER_DIGITS, 8)}/"
                f"B{rand(UPPER_DIGITS, 10)}/{rand(ALNUM, 24)}", "secret.slack_webhook")
    if kind == 5:
        return (f"{rng.choice(['sk', 'rk'])}_{rng.choice(['live', 'test'])}_" + rand(ALNUM, 24),
                "secret.stripe_key")
    if kind == 6:
        return rng.choice(["sk-" + rand(ALNUM, 48),
                           "sk-proj-" + rand(URLSAFE, 120, end_alnum=True)]), \
            "secret.openai_api_key"
    if kind == 7:
        return "sk-ant-api03-" + rand(URLSAFE, 93, end_alnum=True) + "AA", \
            "secret.anthropic_api_key"
    if kind == 8:
        return "AIza" + rand(URLSAFE, 34) + rng.choice(ALNUM), "secret.google_api_key"
    if kind == 9:
        return "ya29." + rand(URLSAFE, 80, end_alnum=True), "secret.google_oauth_token"
    if kind == 10:
        header = b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"},
                                   separators=(",", ":")).encode())
        payload = b64url(json.dumps({"sub": digits(8), "name": rng.choice(FIRST),
                                     "iat": 1700000000 + rng.randint(0, 10**7)}).encode())
        return f"{header}.{payload}.{b64url(bytes(rng.getrandbits(8) for _ in range(32)))}", \
            "secret.jwt"
    if kind == 11:
        label = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
        body = "\n".join(rand(ALNUM + "+/", 64) for _ in range(rng.randint(3, 8)))
        return f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----", \
            "secret.private_key"
    return None, "secret.generic"


GENERIC_KEYS = ["password", "DB_PASSWORD", "api_key", "apiKey", "client_secret",
                "AWS_SECRET_ACCESS_KEY", "auth_token", "access_token", "x-api-key", "secret",
                "passwd", "private_key", "SLACK_SIGNING_SECRET"]


def generic_assignment():
    key = rng.choice(GENERIC_KEYS)
    value = rand(ALNUM + "/+!#%", rng.randint(14, 40))
    while not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        value = rand(ALNUM + "/+!#%", rng.randint(14, 40))
    style = rng.randrange(5)
    if style == 0:
        return f"{key}=", value, ""
    if style == 1:
        return f'{key} = "', value, '"'
    if style == 2:
        return f'"{key}": "', value, '"'
    if style == 3:
        return f"{key}: ", value, ""
    return f"export {key}='", value, "'"


TEMPLATES = {
    "email": ["Please contact me at {}.", "cc: {} and the team", "Send the invoice to <{}>",
              "My address is {} if you need it", "{} wrote: see below", "Reply-To: {}"],
    "phone": ["Call me at {} tomorrow.", "Phone: {}", "You can reach the office on {}.",
              "mobile {} (after 6pm)", "Tel.: {}", "Her number is {}, ask for Sam."],
    "credit_card": ["My card number is {} exp 09/27.", "Charge {} please", "card: {}",
                    "Use the Visa ending... actually the full number is {}.", "PAN={}"],
    "iban": ["Please wire it to {} by Friday.", "IBAN: {}", "Account {} (holder: J. Doe)",
             "Bankverbindung: {}"],
    "us_ssn": ["SSN: {}", "my social security number is {}", "Employee SSN {} on file",
               "ss# {}"],
    "ip_address": ["The server at {} is down.", "ssh admin@{}", "Allow traffic from {} only",
                   "client_ip={}", "ping {} fails", "curl http://[{}]:8080/health"],
    "secret": ["here is my key {} please debug", "Authorization: Bearer {}", "key:\n{}\n",
               "I accidentally committed {} to the repo", "token {}"],
}


def ssn_value():
    a, g, s = ssn_parts()
    style = rng.randrange(4)
    if style == 0 or style == 1:
        return f"{a}-{g}-{s}"
    if style == 2:
        return f"{a} {g} {s}"
    return f"{a}{g}{s}"


def positive(kind):
    if kind == "secret":
        value, type_ = secret()
        if value is None:
            before, value, after = generic_assignment()
            lead = rng.choice(["config:\n", "In .env I have ", "", "settings -> "])
            text = lead + before + value + after + rng.choice(["", "\n", " # prod"])
            start = len(lead) + len(before)
            return text, [(type_, start, start + len(value))]
    else:
        value = {"email": email, "phone": phone, "credit_card": card, "iban": iban,
                 "us_ssn": ssn_value, "ip_address": lambda: rng.choice([ipv4, ipv4, ipv6])()}[kind]()
        type_ = kind
    template = rng.choice(TEMPLATES[kind])
    if kind == "ip_address" and "[" in template and ":" not in value:
        template = "curl http://{}:8080/health"
    if kind == "secret" and type_ == "secret.private_key":
        template = "key:\n{}\n"
    if kind == "us_ssn" and "-" not in value:
        template = rng.choice(["SSN: {}", "my social security number is {}"])
    start = template.index("{}")
    text = template.format(value)
    return text, [(type_, start, start + len(value))]


def combine(parts):
    text, findings = "", []
    for part_text, part_findings in parts:
        if text:
            text += rng.choice([" ", "\n", " Also, "])
        offset = len(text)
        text += part_text
        findings += [(t, s + offset, e + offset) for t, s, e in part_findings]
    return text, findings


NEGATIVES = [
    lambda: f"Upgrade to version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}.{rng.randint(0, 9999)} today",
    lambda: f"Requires python>={rng.randint(2, 3)}.{rng.randint(0, 12)}.{rng.randint(0, 20)} and numpy 1.{rng.randint(10, 26)}.{rng.randint(0, 5)}",
    lambda: f"Chrome/{rng.randint(90, 130)}.0.{rng.randint(1000, 9999)}.{rng.randint(10, 300)} Safari/537.36",
    lambda: f"Release v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 9)} is out",
    lambda: f"UPS tracking 1Z{rand(UPPER_DIGITS, 6)}{digits(10)}",
    lambda: f"USPS tracking {digits(4)} {digits(4)} {digits(4)} {digits(4)} {digits(4)} {digits(2)}",
    lambda: f"FedEx {digits(4)} {digits(4)} {digits(4)}",
    lambda: f"Order #{digits(3)}-{digits(7)}-{digits(7)} shipped",
    lambda: f"Invoice INV-{digits(6)}, PO {digits(8)}",
    lambda: f"commit {rand('0123456789abcdef', 40)}",
    lambda: f"sha256: {rand('0123456789abcdef', 64)}",
    lambda: f"Merged in {rand('0123456789abcdef', 7)} and {rand('0123456789abcdef', 12)}",
    lambda: f"request_id={rand('0123456789abcdef', 8)}-{rand('0123456789abcdef', 4)}-4{rand('0123456789abcdef', 3)}-a{rand('0123456789abcdef', 3)}-{rand('0123456789abcdef', 12)}",
    lambda: f"token: {rand('0123456789abcdef', 40)}",
    lambda: f"session_token = \"{rand('0123456789abcdef', 8)}-{rand('0123456789abcdef', 4)}-{rand('0123456789abcdef', 4)}-{rand('0123456789abcdef', 4)}-{rand('0123456789abcdef', 12)}\"",
    lambda: f"Meeting on {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    lambda: f"Born {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1950, 2010)} in Lyon",
    lambda: f"Due {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2020, 2030)}",
    lambda: f"Timestamp {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
    lambda: rng.choice(["ISBN 978-3-16-148410-0", "ISBN-10: 0-306-40615-2",
                        "ISBN 978-0-596-52068-7", "ISBN: 9780306406157", "ISBN 0-19-852663-6"]),
    lambda: f"Coordinates {rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}",
    lambda: f"GPS: {rng.uniform(0, 90):.6f} N {rng.uniform(0, 180):.6f} W",
    lambda: f"Card {luhn_bad(16)} was declined",
    lambda: f"Reference {luhn_bad(16)}",
    lambda: f"IBAN {iban(valid=False)}",
    lambda: f"SSN {rng.choice(['000', '666', '9' + digits(2)])}-{digits(2)}-{digits(4)}",
    lambda: f"SSN {digits(3)}-00-{digits(4)}",
    lambda: rng.choice(["Write to user@example.com", "e.g. jane@example.org",
                        "admin@test.example", "name@domain.invalid", "foo@localhost.localhost"]),
    lambda: rng.choice(["Use 192.0.2.1 in docs", "route 198.51.100.7", "see 203.0.113.200",
                        "address 2001:db8::1", "prefix 2001:0db8:85a3::8a2e:370:7334"]),
    lambda: "Example key: AKIAIOSFODNN7EXAMPLE",
    lambda: f"Call 555-01{digits(2)} for the movie line",
    lambda: f"Call (212) 555-01{digits(2)} (fictional)",
    lambda: "SSN format is XXX-XX-XXXX, e.g. 123-45-6789",
    lambda: f"Time {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    lambda: f"MAC {':'.join(rand('0123456789ABCDEF', 2) for _ in range(6))}",
    lambda: rng.choice(["std::vector<int> v;", "use std::collections::HashMap;",
                        "Foo::Bar::baz()", "a::b::c", "fn main() { let x = y::z; }"]),
    lambda: f"pi is {rng.choice(['3.14159', '3.1415926535'])} and e is 2.71828",
    lambda: f"Revenue ${rng.randint(1, 999)},{digits(3)},{digits(3)}.{digits(2)}",
    lambda: f"Population {rng.randint(1, 999)},{digits(3)},{digits(3)}",
    lambda: rng.choice(["api_key = YOUR_API_KEY_HERE", "password: ********",
                        "token = ${GITHUB_TOKEN}", "api_key=<your-key>", "secret: {{ vault.secret }}",
                        "password = process.env.DB_PASSWORD", "token: <REDACTED>",
                        "set OPENAI_API_KEY=sk-...", "password: hunter2",
                        "max_tokens: 4096", "num_tokens = 1234567890"]),
    lambda: f"Unix time {rng.randint(1500000000, 1800000000)}",
    lambda: f"Epoch ms {rng.randint(1500000000000, 1800000000000)}",
    lambda: f"Colors #{rand('0123456789abcdef', 6)} and #{rand('0123456789abcdef', 6)}",
    lambda: "Encoded: " + base64.b64encode(rng.choice([b"hello world", b"just some text"])).decode(),
    lambda: f"arn:aws:iam::{digits(12)}:role/deploy",
    lambda: f"Part no. {digits(3)}-{digits(3)}-{digits(3)}",
    lambda: f"Room {rng.randint(100, 999)}, building {rng.randint(1, 40)}",
    lambda: f"Score {rng.randint(0, 100)}-{rng.randint(0, 100)} after {rng.randint(60, 120)} minutes",
    lambda: f"OID 1.3.6.1.4.1.{rng.randint(1, 60000)}.{rng.randint(1, 9)}",
    lambda: f"Serial {digits(9)} ok",
    lambda: f"Zip {digits(5)}-{digits(4)}",
    lambda: f"Build 10.0.{rng.randint(10000, 22999)}.{rng.randint(1, 3000)}",
    lambda: f"pip install scikit-learn==1.{rng.randint(0, 5)}.{rng.randint(0, 3)} sk-learn alias",
    lambda: f"Account number {digits(10)} at the branch",
    lambda: f"Temperature -{rng.randint(1, 40)}.{rng.randint(0, 9)} C, pressure {rng.randint(950, 1050)} hPa",
]


def luhn_bad(length):
    while True:
        prefix = rng.choice(["4", "51", "6011", "37"])
        number = prefix + digits(length - len(prefix))
        if not luhn_ok(number):
            return " ".join(number[i:i + 4] for i in range(0, len(number), 4)) \
                if rng.random() < 0.5 else number


def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "detectors.jsonl")
    records = []
    counts = {"email": 90, "phone": 160, "credit_card": 100, "iban": 90, "us_ssn": 90,
              "ip_address": 110, "secret": 260}
    for kind, n in counts.items():
        for _ in range(n):
            records.append(positive(kind))
    for _ in range(80):
        kinds = rng.sample(sorted(counts), rng.randint(2, 3))
        records.append(combine([positive(k) for k in kinds]))
    for _ in range(8):
        for make in NEGATIVES:
            records.append((make(), []))
    for _ in range(60):
        records.append(combine([(NEGATIVES[rng.randrange(len(NEGATIVES))](), [])
                                for _ in range(2)] + [positive(rng.choice(sorted(counts)))]))
    rng.shuffle(records)
    with open(out_path, "w") as f:
        for text, findings in records:
            f.write(json.dumps({"text": text, "findings": [
                {"type": t, "start": s, "end": e} for t, s, e in findings]}) + "\n")
    print(f"wrote {len(records)} records to {out_path}")


if __name__ == "__main__":
    main()
