"""Fictional personas with culturally consistent sensitive attributes.

Names and jobs come from Faker locales; phone numbers, IBANs (valid mod-97 check
digits), passports, cities and e-mail domains follow a per-country table, because
many Faker locales fall back to US formats for those. Identifying values (name,
phone, e-mail, IBAN, card, passport) are globally unique across the dataset.
"""
import dataclasses
import unicodedata

import faker
import numpy as np

# (country, Faker locale for names, ISO code, calling code, IBAN length or None, cities)
COUNTRIES = (
    ("United States", "en_US", "US", "1", None, ("New York", "Chicago", "Houston", "Phoenix", "Seattle")),
    ("United Kingdom", "en_GB", "GB", "44", 22, ("London", "Manchester", "Birmingham", "Leeds", "Glasgow")),
    ("Ireland", "en_IE", "IE", "353", 22, ("Dublin", "Cork", "Galway", "Limerick", "Waterford")),
    ("Canada", "fr_CA", "CA", "1", None, ("Montreal", "Quebec City", "Ottawa", "Toronto", "Vancouver")),
    ("Australia", "en_AU", "AU", "61", None, ("Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide")),
    ("New Zealand", "en_NZ", "NZ", "64", None, ("Auckland", "Wellington", "Christchurch", "Hamilton", "Dunedin")),
    ("India", "en_IN", "IN", "91", None, ("Mumbai", "Delhi", "Bengaluru", "Chennai", "Kolkata")),
    ("Pakistan", "en_PK", "PK", "92", 24, ("Karachi", "Lahore", "Islamabad", "Faisalabad", "Peshawar")),
    ("Kenya", "en_KE", "KE", "254", None, ("Nairobi", "Mombasa", "Kisumu", "Nakuru", "Eldoret")),
    ("Nigeria", "en_NG", "NG", "234", None, ("Lagos", "Abuja", "Ibadan", "Kano", "Port Harcourt")),
    ("Thailand", "en_TH", "TH", "66", None, ("Bangkok", "Chiang Mai", "Phuket", "Khon Kaen", "Pattaya")),
    ("Germany", "de_DE", "DE", "49", 22, ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt")),
    ("Austria", "de_AT", "AT", "43", 20, ("Vienna", "Graz", "Linz", "Salzburg", "Innsbruck")),
    ("Switzerland", "de_CH", "CH", "41", 21, ("Zurich", "Geneva", "Basel", "Bern", "Lausanne")),
    ("Liechtenstein", "de_LI", "LI", "423", 21, ("Vaduz", "Schaan", "Triesen", "Balzers", "Eschen")),
    ("Luxembourg", "de_LU", "LU", "352", 20, ("Luxembourg City", "Esch-sur-Alzette", "Differdange", "Dudelange", "Ettelbruck")),
    ("France", "fr_FR", "FR", "33", 27, ("Paris", "Lyon", "Marseille", "Toulouse", "Bordeaux")),
    ("Belgium", "nl_BE", "BE", "32", 16, ("Brussels", "Antwerp", "Ghent", "Bruges", "Liège")),
    ("Algeria", "fr_DZ", "DZ", "213", 26, ("Algiers", "Oran", "Constantine", "Annaba", "Blida")),
    ("Netherlands", "nl_NL", "NL", "31", 18, ("Amsterdam", "Rotterdam", "Utrecht", "The Hague", "Eindhoven")),
    ("Spain", "es_ES", "ES", "34", 24, ("Madrid", "Barcelona", "Valencia", "Seville", "Bilbao")),
    ("Mexico", "es_MX", "MX", "52", None, ("Mexico City", "Guadalajara", "Monterrey", "Puebla", "Cancún")),
    ("Argentina", "es_AR", "AR", "54", None, ("Buenos Aires", "Córdoba", "Rosario", "Mendoza", "La Plata")),
    ("Colombia", "es_CO", "CO", "57", None, ("Bogotá", "Medellín", "Cali", "Barranquilla", "Cartagena")),
    ("Chile", "es_CL", "CL", "56", None, ("Santiago", "Valparaíso", "Concepción", "Antofagasta", "Temuco")),
    ("Brazil", "pt_BR", "BR", "55", 29, ("São Paulo", "Rio de Janeiro", "Brasília", "Salvador", "Recife")),
    ("Portugal", "pt_PT", "PT", "351", 25, ("Lisbon", "Porto", "Braga", "Coimbra", "Faro")),
    ("Italy", "it_IT", "IT", "39", 27, ("Rome", "Milan", "Naples", "Turin", "Florence")),
    ("Poland", "pl_PL", "PL", "48", 28, ("Warsaw", "Kraków", "Gdańsk", "Wrocław", "Poznań")),
    ("Czech Republic", "cs_CZ", "CZ", "420", 24, ("Prague", "Brno", "Ostrava", "Plzeň", "Olomouc")),
    ("Slovakia", "sk_SK", "SK", "421", 24, ("Bratislava", "Košice", "Žilina", "Nitra", "Prešov")),
    ("Hungary", "hu_HU", "HU", "36", 28, ("Budapest", "Debrecen", "Szeged", "Pécs", "Győr")),
    ("Romania", "ro_RO", "RO", "40", 24, ("Bucharest", "Cluj-Napoca", "Iași", "Timișoara", "Constanța")),
    ("Croatia", "hr_HR", "HR", "385", 21, ("Zagreb", "Split", "Rijeka", "Osijek", "Zadar")),
    ("Slovenia", "sl_SI", "SI", "386", 19, ("Ljubljana", "Maribor", "Celje", "Kranj", "Koper")),
    ("Finland", "fi_FI", "FI", "358", 18, ("Helsinki", "Espoo", "Tampere", "Turku", "Oulu")),
    ("Sweden", "sv_SE", "SE", "46", 24, ("Stockholm", "Gothenburg", "Malmö", "Uppsala", "Västerås")),
    ("Norway", "no_NO", "NO", "47", 15, ("Oslo", "Bergen", "Trondheim", "Stavanger", "Tromsø")),
    ("Denmark", "da_DK", "DK", "45", 18, ("Copenhagen", "Aarhus", "Odense", "Aalborg", "Esbjerg")),
    ("Estonia", "et_EE", "EE", "372", 20, ("Tallinn", "Tartu", "Narva", "Pärnu", "Viljandi")),
    ("Lithuania", "lt_LT", "LT", "370", 20, ("Vilnius", "Kaunas", "Klaipėda", "Šiauliai", "Panevėžys")),
    ("Latvia", "lv_LV", "LV", "371", 21, ("Riga", "Daugavpils", "Liepāja", "Jelgava", "Jūrmala")),
    ("Iceland", "is_IS", "IS", "354", 26, ("Reykjavík", "Kópavogur", "Hafnarfjörður", "Akureyri", "Selfoss")),
    ("Turkey", "tr_TR", "TR", "90", 26, ("Istanbul", "Ankara", "Izmir", "Bursa", "Antalya")),
    ("Azerbaijan", "az_AZ", "AZ", "994", 28, ("Baku", "Ganja", "Sumgait", "Mingachevir", "Lankaran")),
    ("Indonesia", "id_ID", "ID", "62", None, ("Jakarta", "Surabaya", "Bandung", "Medan", "Semarang")),
    ("Vietnam", "vi_VN", "VN", "84", None, ("Hanoi", "Ho Chi Minh City", "Da Nang", "Hai Phong", "Can Tho")),
    ("Ghana", "tw_GH", "GH", "233", None, ("Accra", "Kumasi", "Tamale", "Takoradi", "Cape Coast")),
    ("South Africa", "zu_ZA", "ZA", "27", None, ("Johannesburg", "Cape Town", "Durban", "Pretoria", "Bloemfontein")),
    ("Tanzania", "sw", "TZ", "255", None, ("Dar es Salaam", "Dodoma", "Arusha", "Mwanza", "Zanzibar")),
    ("Uzbekistan", "uz_UZ", "UZ", "998", None, ("Tashkent", "Samarkand", "Bukhara", "Namangan", "Andijan")),
)
# Countries without IBANs get an IBAN-shaped account number of this length.
DEFAULT_IBAN_LENGTH = 22
BLOOD_TYPES = ("O+", "A+", "B+", "AB+", "O-", "A-", "B-", "AB-")
BLOOD_TYPE_WEIGHTS = (0.37, 0.30, 0.09, 0.04, 0.07, 0.07, 0.04, 0.02)
MAIL_DOMAINS = ("mailhub", "postbox", "webmail", "inboxly", "netpost", "sendit")
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclasses.dataclass(frozen=True)
class Persona:
  identity: int
  name: str
  gender: str  # "male" or "female": used by the face renderer and generic captions.
  country: str
  city: str
  job: str
  blood_type: str
  phone_number: str
  email: str
  iban: str
  credit_card: str
  passport: str

  def value(self, field: str) -> str:
    """The caption text of a sensitive field (`city` carries its country)."""
    if field == "city":
      return f"{self.city}, {self.country}"
    return getattr(self, field)


def ascii_fold(text: str) -> str:
  """'Fatime Fossì' -> 'Fatime Fossi', for e-mail addresses."""
  folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
  return "".join(ch for ch in folded.lower() if ch.isalnum())


def iban_check_digits(country: str, bban: str) -> str:
  """ISO 13616 check digits: move country+00 to the end, letters to numbers, mod 97."""
  rearranged = bban + country + "00"
  numeric = "".join(str(int(ch, 36)) for ch in rearranged)
  return f"{98 - int(numeric) % 97:02d}"


def _digits(rng: np.random.Generator, n: int, first_nonzero: bool = True) -> str:
  digits = rng.integers(0, 10, size=n)
  if first_nonzero:
    digits[0] = rng.integers(1, 10)
  return "".join(map(str, digits))


def _grouped(text: str, size: int = 4) -> str:
  return " ".join(text[i:i + size] for i in range(0, len(text), size))


def make_iban(rng: np.random.Generator, iso: str, length: int | None) -> str:
  bban = "".join(rng.choice(_LETTERS, size=4)) + _digits(rng, (length or DEFAULT_IBAN_LENGTH) - 8)
  return _grouped(iso + iban_check_digits(iso, bban) + bban)


def make_phone(rng: np.random.Generator, calling_code: str) -> str:
  national = _digits(rng, 10 if calling_code in ("1", "91", "92") else 9)
  return f"+{calling_code} {national[:3]} {national[3:6]} {national[6:]}"


def make_passport(rng: np.random.Generator) -> str:
  return "".join(rng.choice(_LETTERS, size=2)) + _digits(rng, 7)


def luhn_complete(prefix: str) -> str:
  """Appends the Luhn check digit so that card numbers are well formed."""
  total = 0
  for i, ch in enumerate(reversed(prefix)):
    d = int(ch)
    if i % 2 == 0:
      d = d * 2 - 9 if d * 2 > 9 else d * 2
    total += d
  return prefix + str((10 - total % 10) % 10)


def make_credit_card(rng: np.random.Generator) -> str:
  issuer = rng.choice(["4", "51", "52", "53", "54", "55"])
  return _grouped(luhn_complete(issuer + _digits(rng, 15 - len(issuer), first_nonzero=False)))


def make_personas(count: int, seed: int, first_identity: int = 0) -> list[Persona]:
  """`count` personas, a pure function of (count, seed, first_identity)."""
  jobs_faker = faker.Faker("en_US")
  fakers: dict[str, faker.Faker] = {}  # One per locale, re-seeded for every persona.
  taken: dict[str, set] = {k: set() for k in
                           ("name", "phone_number", "email", "iban", "credit_card", "passport")}
  personas = []
  for offset in range(count):
    identity = first_identity + offset
    rng = np.random.default_rng([seed, 0x9E85, identity])
    country, locale, iso, calling, iban_len, cities = COUNTRIES[rng.integers(len(COUNTRIES))]
    if locale not in fakers:
      fakers[locale] = faker.Faker(locale)
    gen = fakers[locale]
    gen.seed_instance(int(rng.integers(2**31)))
    jobs_faker.seed_instance(int(rng.integers(2**31)))
    gender = "female" if rng.random() < 0.5 else "male"

    def unique(kind, make):
      for _ in range(1000):
        value = make()
        if value not in taken[kind]:
          taken[kind].add(value)
          return value
      raise RuntimeError(f"could not draw a unique {kind} for persona {identity}")

    first = gen.first_name_female if gender == "female" else gen.first_name_male
    name = unique("name", lambda: f"{first()} {gen.last_name()}")
    given, family = name.split(" ", 1)
    stem = ascii_fold(given)[:1] + ascii_fold(family)
    email = unique("email", lambda: (
        f"{stem}{rng.integers(10, 99) if rng.random() < 0.5 else ''}"
        f"@{rng.choice(MAIL_DOMAINS)}.{'com' if rng.random() < 0.5 else iso.lower()}"))
    personas.append(Persona(
        identity=identity, name=name, gender=gender, country=country,
        city=str(rng.choice(cities)), job=jobs_faker.job(),
        blood_type=str(rng.choice(BLOOD_TYPES, p=BLOOD_TYPE_WEIGHTS)),
        phone_number=unique("phone_number", lambda: make_phone(rng, calling)),
        email=email,
        iban=unique("iban", lambda: make_iban(rng, iso, iban_len)),
        credit_card=unique("credit_card", lambda: make_credit_card(rng)),
        passport=unique("passport", lambda: make_passport(rng)),
    ))
  return personas
