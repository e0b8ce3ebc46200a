//! The web pages' labels in English and Bahasa Indonesia: one table ([`L::text`]), and the
//! choice of language (`?lang=` on any page, remembered in a cookie). Data (site names,
//! summaries, notes) is shown as recorded, untranslated.

use axum::http::HeaderMap;

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Bahasa Indonesia.
    Id,
}

/// Name of the language cookie.
pub const LANG_COOKIE: &str = "dcguard_lang";

impl Lang {
    /// `en` or `id`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Id => "id",
        }
    }

    /// The language of a code (`en`, `id`); `None` for anything else.
    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "en" => Some(Lang::En),
            "id" => Some(Lang::Id),
            _ => None,
        }
    }

    /// The language of a request: `?lang=` when given and known, else the cookie, else
    /// English. The second value is true when the query chose it (the answer then sets
    /// the cookie).
    pub fn of(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
        if let Some(lang) = query.and_then(Lang::parse) {
            return (lang, true);
        }
        let cookie = super::session::cookie(headers, LANG_COOKIE).and_then(|c| Lang::parse(&c));
        (cookie.unwrap_or_default(), false)
    }

    /// The label in this language.
    pub fn t(self, label: L) -> &'static str {
        let (en, id) = label.text();
        match self {
            Lang::En => en,
            Lang::Id => id,
        }
    }
}

/// Every label of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum L {
    AppTitle,
    SignIn,
    SignInHelp,
    Token,
    SignOut,
    SignedInAs,
    ControlRoom,
    Security,
    Language,
    Live,
    Offline,
    Rooms,
    Room,
    Temperature,
    Humidity,
    Limits,
    NoData,
    Ok,
    High,
    Low,
    Power,
    Utility,
    Ups,
    Gensets,
    FuelAutonomy,
    Design,
    Cooling,
    Up,
    Down,
    Unknown,
    ActiveAlarms,
    NoAlarms,
    Priority,
    Site,
    Alarm,
    State,
    Age,
    SlaDue,
    Actions,
    Comment,
    Acknowledge,
    Reason,
    Shelve,
    Minutes,
    Incidents,
    NoIncidents,
    Delivery,
    Opened,
    Findings,
    NoFindings,
    Filter,
    Rule,
    Person,
    Ticket,
    From,
    Until,
    Reviewed,
    Any,
    Yes,
    No,
    Severity,
    Time,
    Summary,
    Review,
    Note,
    Occupancy,
    NobodyInside,
    Credential,
    Role,
    Escort,
    Entered,
    AccessLog,
    Reader,
    Search,
    ExportCsv,
    NoEvents,
    Kind,
    Direction,
    AuditChain,
    Intact,
    Broken,
    Records,
    Checkpoints,
    SignedThrough,
    Visit,
    Window,
    Activity,
    Approver,
    People,
    Left,
    StillInside,
    EscortPairing,
    PicAt,
    NoEscort,
    Back,
    Error,
    NotAvailable,
    Shelved,
    Unresolved,
}

impl L {
    /// (English, Bahasa Indonesia): the one table of labels.
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            L::AppTitle => ("dcguard", "dcguard"),
            L::SignIn => ("Sign in", "Masuk"),
            L::SignInHelp => (
                "Paste your dcguard API token. The role of the token decides what you see.",
                "Tempelkan token API dcguard Anda. Peran token menentukan apa yang Anda lihat.",
            ),
            L::Token => ("Token", "Token"),
            L::SignOut => ("Sign out", "Keluar"),
            L::SignedInAs => ("Signed in as", "Masuk sebagai"),
            L::ControlRoom => ("Control room", "Ruang kontrol"),
            L::Security => ("Security review", "Tinjauan keamanan"),
            L::Language => ("Language", "Bahasa"),
            L::Live => ("live", "langsung"),
            L::Offline => (
                "connection lost, retrying",
                "koneksi terputus, mencoba lagi",
            ),
            L::Rooms => ("Rooms", "Ruangan"),
            L::Room => ("Room", "Ruangan"),
            L::Temperature => ("Temperature", "Suhu"),
            L::Humidity => ("Humidity", "Kelembapan"),
            L::Limits => ("limits", "batas"),
            L::NoData => ("no data", "tidak ada data"),
            L::Ok => ("OK", "OK"),
            L::High => ("HIGH", "TINGGI"),
            L::Low => ("LOW", "RENDAH"),
            L::Power => ("Power", "Daya"),
            L::Utility => ("Utility (PLN)", "PLN"),
            L::Ups => ("UPS", "UPS"),
            L::Gensets => ("Gensets", "Genset"),
            L::FuelAutonomy => ("Fuel autonomy", "Otonomi BBM"),
            L::Design => ("design", "desain"),
            L::Cooling => ("Cooling", "Pendinginan"),
            L::Up => ("up", "aktif"),
            L::Down => ("DOWN", "MATI"),
            L::Unknown => ("unknown", "tidak diketahui"),
            L::ActiveAlarms => ("Active alarms", "Alarm aktif"),
            L::NoAlarms => ("No active alarms.", "Tidak ada alarm aktif."),
            L::Priority => ("Priority", "Prioritas"),
            L::Site => ("Site", "Lokasi"),
            L::Alarm => ("Alarm", "Alarm"),
            L::State => ("State", "Status"),
            L::Age => ("Age", "Umur"),
            L::SlaDue => ("SLA due", "Batas SLA"),
            L::Actions => ("Actions", "Tindakan"),
            L::Comment => ("Comment", "Komentar"),
            L::Acknowledge => ("Acknowledge", "Akui"),
            L::Reason => ("Reason", "Alasan"),
            L::Shelve => ("Shelve", "Tunda"),
            L::Minutes => ("min", "menit"),
            L::Incidents => ("Incidents", "Insiden"),
            L::NoIncidents => ("No open incidents.", "Tidak ada insiden terbuka."),
            L::Delivery => ("Delivery", "Pengiriman"),
            L::Opened => ("Opened", "Dibuka"),
            L::Findings => ("Findings", "Temuan"),
            L::NoFindings => ("No findings match.", "Tidak ada temuan yang cocok."),
            L::Filter => ("Filter", "Saring"),
            L::Rule => ("Rule", "Aturan"),
            L::Person => ("Person", "Orang"),
            L::Ticket => ("Ticket", "Tiket"),
            L::From => ("From (UTC date)", "Dari (tanggal UTC)"),
            L::Until => ("Until (UTC date)", "Sampai (tanggal UTC)"),
            L::Reviewed => ("Reviewed", "Ditinjau"),
            L::Any => ("any", "semua"),
            L::Yes => ("yes", "ya"),
            L::No => ("no", "tidak"),
            L::Severity => ("Severity", "Tingkat"),
            L::Time => ("Time", "Waktu"),
            L::Summary => ("Summary", "Ringkasan"),
            L::Review => ("Review", "Tinjau"),
            L::Note => ("Note", "Catatan"),
            L::Occupancy => ("Inside now", "Di dalam sekarang"),
            L::NobodyInside => ("Nobody inside.", "Tidak ada orang di dalam."),
            L::Credential => ("Credential", "Kredensial"),
            L::Role => ("Role", "Peran"),
            L::Escort => ("Escorted by", "Didampingi oleh"),
            L::Entered => ("Entered", "Masuk"),
            L::AccessLog => ("Access log", "Log akses"),
            L::Reader => ("Reader", "Pembaca"),
            L::Search => ("Search", "Cari"),
            L::ExportCsv => ("Export CSV", "Ekspor CSV"),
            L::NoEvents => ("No events match.", "Tidak ada kejadian yang cocok."),
            L::Kind => ("Kind", "Jenis"),
            L::Direction => ("Direction", "Arah"),
            L::AuditChain => ("Audit chain", "Rantai audit"),
            L::Intact => ("INTACT", "UTUH"),
            L::Broken => ("BROKEN", "RUSAK"),
            L::Records => ("records", "catatan"),
            L::Checkpoints => ("signed checkpoints", "checkpoint bertanda tangan"),
            L::SignedThrough => ("signed through", "ditandatangani sampai"),
            L::Visit => ("Visit", "Kunjungan"),
            L::Window => ("Window", "Jendela waktu"),
            L::Activity => ("Activity", "Kegiatan"),
            L::Approver => ("Approver", "Pemberi persetujuan"),
            L::People => ("People", "Orang"),
            L::Left => ("Left", "Keluar"),
            L::StillInside => ("still inside", "masih di dalam"),
            L::EscortPairing => ("Escort pairing", "Pendampingan"),
            L::PicAt => ("PIC at", "PIC pada"),
            L::NoEscort => ("NO ESCORT", "TANPA PENDAMPING"),
            L::Back => ("Back", "Kembali"),
            L::Error => ("Error", "Kesalahan"),
            L::NotAvailable => ("not available", "tidak tersedia"),
            L::Shelved => ("shelved until", "ditunda sampai"),
            L::Unresolved => ("unresolved", "belum selesai"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The language comes from the query first, then the cookie; unknown codes fall back.
    #[test]
    fn language_from_query_then_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::of(None, &headers), (Lang::En, false));
        headers.insert("cookie", "a=b; dcguard_lang=id".parse().unwrap());
        assert_eq!(Lang::of(None, &headers), (Lang::Id, false));
        assert_eq!(Lang::of(Some("en"), &headers), (Lang::En, true));
        assert_eq!(Lang::of(Some("fr"), &headers), (Lang::Id, false));
        assert_eq!(Lang::Id.t(L::Acknowledge), "Akui");
        assert_eq!(Lang::En.t(L::Acknowledge), "Acknowledge");
    }
}
